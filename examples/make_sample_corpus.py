"""Write examples/sample.parquet: a small corpus with the cases annotators meet (run from the repo root)."""

import pyarrow as pa
import pyarrow.parquet as pq

TEXTS = [
    "John lives in New York City and works for the United Nations.",
    "Marie Curie won the Nobel Prize in Physics in 1903 with Pierre Curie and Henri Becquerel.",
    "The European Central Bank raised interest rates on Thursday, Christine Lagarde said in Frankfurt.",
    "Apple Inc. unveiled the first iPhone at the Moscone Center in San Francisco in January 2007.",
    "Tokyo, Osaka et Kyoto sont des villes du Japon ; Zürich est en Suisse.",
    "Ada Lovelace wrote notes on Charles Babbage's Analytical Engine in London.",
    None,
    "",
    "   ",
    "The Amazon river flows through Brazil, Peru and Colombia before reaching the Atlantic Ocean. " * 40,
    "Emoji 🙂 and tabs\tand\nnewlines around Barack Obama and Angela Merkel.",
    "北京是中华人民共和国的首都。",
    "The Treaty of Versailles was signed on 28 June 1919 at the Palace of Versailles near Paris.",
    "NASA's Perseverance rover landed in Jezero Crater on Mars in February 2021.",
    "Lionel Messi joined Inter Miami after leaving Paris Saint-Germain.",
    "The Rosetta Stone is displayed at the British Museum in London.",
]

table = pa.table({"id": pa.array(range(len(TEXTS)), pa.int64()), "text": pa.array(TEXTS, pa.string())})
pq.write_table(table, "examples/sample.parquet", row_group_size=5)
print(f"wrote examples/sample.parquet: {table.num_rows} rows")
