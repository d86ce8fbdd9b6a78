"""A fixed set of texts for validation and span-level agreement (varied lengths and scripts)."""

VALIDATION_TEXTS: tuple[str, ...] = (
    "John lives in New York City.",
    "Marie Curie won the Nobel Prize in Physics in 1903 with Pierre Curie and Henri Becquerel.",
    "The European Central Bank raised rates on Thursday, Christine Lagarde told reporters in Frankfurt.",
    "Apple Inc. unveiled the iPhone at the Moscone Center in San Francisco.",
    "OK",
    "",
    "  Leading and trailing spaces around Paris and Berlin.  ",
    "Tokyo, Osaka et Kyoto sont des villes du Japon ; Zürich est en Suisse.",
    "The Amazon river flows through Brazil, Peru and Colombia before reaching the Atlantic Ocean, "
    "and the Amazon company, founded by Jeff Bezos in Seattle, is named after it. In 2021, the "
    "United Nations Environment Programme published a report on deforestation in the Amazon basin, "
    "citing data from the Brazilian National Institute for Space Research (INPE) and NASA.",
    "Dr. Ada Lovelace worked with Charles Babbage on the Analytical Engine in London during the 1840s; "
    "her notes, published in Taylor's Scientific Memoirs, describe an algorithm for Bernoulli numbers.",
    "北京是中华人民共和国的首都。",
    "Emoji 🙂 and tabs\tand\nnewlines near Barack Obama.",
)
