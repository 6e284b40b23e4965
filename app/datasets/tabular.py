"""Tables as training data: CSV / TSV files and the first sheet of an Excel workbook.

A table has a header row of column names; every row below it becomes a record ``{column:
text}`` numbered as a spreadsheet shows it (the header is row 1, a cell spanning several lines
is still one row). Cells are always text: Excel numbers and dates are written the way a person
reads them. Rows are streamed, so a large table never sits in memory; merged cells, which
openpyxl's streaming reader cannot see, are found by scanning the sheet's XML for `mergeCell`.

The readers are `dataset_csv` and `dataset_xlsx`, with the header and rows they share in
`dataset_table_rows`; this module is what the rest of the app imports them by.
"""

from __future__ import annotations

from app.datasets.csv_files import (
    DELIMITERS,
    MAX_CELL_BYTES,
    SNIFF_BYTES,
    open_csv,
    sniff_delimiter,
)
from app.datasets.table_rows import Table, column_letter
from app.datasets.xlsx import DAMAGED, NOT_A_WORKBOOK, open_xlsx
from app.datasets.zip_limits import MAX_UNPACKED_BYTES

__all__ = [
    "DAMAGED",
    "DELIMITERS",
    "MAX_CELL_BYTES",
    "MAX_UNPACKED_BYTES",
    "NOT_A_WORKBOOK",
    "SNIFF_BYTES",
    "Table",
    "column_letter",
    "open_csv",
    "open_xlsx",
    "sniff_delimiter",
]
