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


def _long_text(sentences: int = 160) -> str:
    """A deterministic news-like text of about 15,000 characters: more tokens than the window of
    any supported tokenizer (2,048 positions; Llama 3 reads about 4 characters a token), so that
    validation reaches the far positions where low-precision rotary tables drift. Varied names,
    places and organisations, so that the head finds spans all along."""
    people = ["Angela Merkel", "Nelson Mandela", "Ada Lovelace", "Marie Curie", "Kofi Annan", "Frida Kahlo",
              "Alan Turing", "Wangari Maathai", "Haruki Murakami", "Simone de Beauvoir", "Jacinda Ardern",
              "Satya Nadella", "Chimamanda Ngozi Adichie", "Lionel Messi", "Greta Thunberg", "Albert Einstein"]
    places = ["Berlin", "Johannesburg", "London", "Warsaw", "Accra", "Mexico City", "Manchester", "Nairobi",
              "Kyoto", "Paris", "Wellington", "Seattle", "Lagos", "Buenos Aires", "Stockholm", "Princeton"]
    groups = ["the European Union", "the African Union", "the Royal Society", "the Sorbonne", "the United Nations",
              "the Museo Frida Kahlo", "Bletchley Park", "the Green Belt Movement", "Kodansha", "Gallimard",
              "the Labour Party", "Microsoft", "the University of Lagos", "FC Barcelona", "Fridays for Future",
              "the Institute for Advanced Study"]
    frames = [
        "{p} arrived in {c} on a Monday morning to meet delegates from {g}.",
        "According to a report published in {c}, {p} had written to {g} twice that year.",
        "The archive of {g} in {c} keeps letters that {p} sent during the winter of {y}.",
        "In {y}, {p} gave a lecture in {c}, and {g} printed it the following spring.",
        "Reporters from {c} asked {p} whether {g} would change its plans before {y}.",
        "A small exhibition about {p} opened in {c}, with loans from {g}.",
        "Historians at {g} say that {p} spent most of {y} between {c} and {c2}.",
        "When {p} left {c} for {c2}, {g} sent a short statement to the press.",
    ]
    out = []
    for i in range(sentences):
        out.append(frames[i % len(frames)].format(
            p=people[(i * 5) % len(people)], c=places[(i * 3) % len(places)],
            c2=places[(i * 7 + 1) % len(places)], g=groups[(i * 11) % len(groups)], y=1890 + (i * 13) % 130))
        if i % 6 == 5:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n")


# one text near the window length: the exporter cuts its encoding to the bundle's window
# (``validate.validation_encodings``), so the far positions are validated too
LONG_VALIDATION_TEXT: str = _long_text()
