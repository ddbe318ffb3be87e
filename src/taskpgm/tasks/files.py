"""The user's own task files: JSONL, JSON, CSV, Parquet, ``datasets`` directories and ``hf:``.

Records become examples through a :class:`~taskpgm.tasks.records.FieldMapping`.
Tabular sources are read as Arrow record batches; JSONL in chunks of about
10 MB parsed by pyarrow. A clean batch is validated and hashed column-wise (the
fast path). A batch with anything unusual (a null, a wrongly typed value, an
out-of-range answer, a line pyarrow cannot parse) goes through the
record-by-record path instead, which is the authority: it accepts or rejects
each record itself and says exactly where and why. Every problem of a file is
collected and reported together.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from taskpgm.errors import DataError, NotFoundError
from taskpgm.tasks.builder import BATCH, Problems, TaskBuilder
from taskpgm.tasks.formatting import US, Template, format_column
from taskpgm.tasks.loadprogress import LoadProgress
from taskpgm.tasks.records import FieldMapping, add_record, check_mapping
from taskpgm.textfile import read_utf8

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
CHUNK = 10 << 20  # bytes of JSONL parsed at once: large enough for pyarrow's threads

Record = tuple[str, dict[str, Any] | None, str | None]  # (where, record, problem)

__all__ = ["FieldMapping", "is_file_spec", "load_file", "task_name_for"]


class _Stop(Exception):
    """Raised by the fast path when a batch needs the record-by-record path."""


def is_file_spec(spec: str) -> bool:
    """A spec that names a local file or ``datasets`` directory."""
    if spec.startswith(("bigbench:", "mmlu:", "hf:")):  # sources, even with a "/" subtask
        return False
    return spec.lower().endswith(SUFFIXES) or os.path.isdir(spec) or os.sep in spec \
        or spec.startswith(".")


def task_name_for(spec: str) -> str:
    """The default task name of a file spec: the file name without its suffix.

    Characters outside ``[A-Za-z0-9_.-]`` become ``_`` (names end up in paths).
    """
    if spec.startswith("hf:"):  # id, config and a split other than train; not the revision
        ident, config, _, split = hf_spec(spec)
        name = "__".join([ident.replace("/", "__"), *([config] if config else []),
                          *([split] if split != "train" else [])])
    else:
        path = Path(spec.rstrip("/"))
        name = path.stem if path.suffix.lower() in SUFFIXES else path.name
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip(".-") or "task"


class _Reader:
    """Feeds records and batches of one source into a builder, collecting problems."""

    def __init__(self, spec: str, builder: TaskBuilder, mapping: FieldMapping,
                 template: Template, max_examples: int | None) -> None:
        self.spec, self.builder, self.mapping, self.template = spec, builder, mapping, template
        self.max_examples = max_examples
        self.problems = Problems(spec)
        self.progress = LoadProgress(builder.task)
        self.n = 0
        self.checked = False

    @property
    def full(self) -> bool:
        return self.max_examples is not None and self.n >= self.max_examples

    def check(self, columns: set[str], first: str) -> None:
        if not self.checked:
            check_mapping(self.spec, columns, self.mapping, self.template, first)
            self.checked = True

    def records(self, items: Iterator[Record]) -> None:
        for where, record, problem in items:
            if self.full:
                return
            if problem is not None or record is None:
                self.problems.add(where, problem or "not a record")
                continue
            self.check(set(record), where)
            add_record(record, where, self.builder, self.mapping, self.template, self.problems)
            self.n += 1
            self.progress.update()

    def batch(self, batch: pa.RecordBatch, fallback: Callable[[], Iterator[Record]]) -> None:
        """Add a batch column-wise, or record by record (``fallback``) if it is unusual."""
        self.check(set(batch.schema.names), "the first record")
        if self.max_examples is not None and self.n + batch.num_rows > self.max_examples:
            batch = batch.slice(0, self.max_examples - self.n)
        try:
            _fast_batch(batch, self.builder, self.mapping, self.template)
        except _Stop:
            self.records(fallback())
            return
        self.n += batch.num_rows
        self.progress.update(batch.num_rows)

    def finish(self) -> int:
        if self.n == 0 and not self.problems:
            raise DataError(f"{self.spec} is empty: it has no examples; add examples or "
                            "remove the task")
        self.problems.raise_if_any()
        return self.n


def load_file(
    spec: str,
    builder: TaskBuilder,
    mapping: FieldMapping,
    template: Template,
    *,
    max_examples: int | None = None,
) -> int:
    """Stream a file source into ``builder``; returns the number of examples read.

    Raises:
        NotFoundError: the file does not exist, or ``hf:`` data cannot be fetched.
        DataError: the file is empty or has bad records (all of them are listed).
    """
    reader = _Reader(spec, builder, mapping, template, max_examples)
    if spec.startswith("hf:"):
        _arrow(reader, _hf_batches(spec), lambda i: f"row {i}")
        return reader.finish()
    path = Path(spec)
    try:
        exists = path.exists()
    except OSError as err:  # a name too long, a component that is a file, ...
        raise NotFoundError(f"task file {spec} cannot be opened ({err.strerror}); check "
                            "the path") from err
    if not exists:
        raise NotFoundError(f"task file {spec} does not exist; check the path "
                            f"(supported: {', '.join(SUFFIXES)}, a datasets directory, hf:ID)")
    if path.is_dir():
        _arrow(reader, _dataset_dir_batches(path), lambda i: f"row {i}")
        return reader.finish()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{spec}: unsupported file type {suffix!r}; use one of "
                        f"{', '.join(SUFFIXES)}, a datasets directory or hf:ID")
    if path.stat().st_size == 0:
        raise DataError(f"{spec} is empty: it has no examples; add examples or remove the task")
    if suffix == ".jsonl":
        _jsonl(reader, path)
    elif suffix == ".json":
        reader.records(_json_records(path))
    elif suffix == ".csv":
        m = reader.mapping
        text = {m.prompt, m.target, *template.fields} - {"prompt"} | {m.prompt}
        if isinstance(m.choices, str):
            text.add(m.choices)
        _arrow(reader, _csv_batches(path, text), lambda i: f"line {i + 2}")
    else:
        _arrow(reader, _parquet_batches(path), lambda i: f"row {i}")
    return reader.finish()


def valid(batch: pa.RecordBatch) -> bool:
    """Whether pyarrow's own full check passes (it can build invalid arrays from odd input,
    e.g. a JSON list that starts with null, and computing on those can crash)."""
    try:
        batch.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowException):
        return False
    return True


def _arrow(reader: _Reader, batches: Iterator[pa.RecordBatch], locate: Callable[[int], str]
           ) -> None:
    start = 0
    for batch in batches:
        first = start
        if not valid(batch):
            raise DataError(f"{reader.spec}: rows {first}-{first + batch.num_rows - 1} do not "
                            "form a valid table (pyarrow's check fails); the file is damaged "
                            "— write it again")

        def rows(batch: pa.RecordBatch = batch, first: int = first) -> Iterator[Record]:
            for i, record in enumerate(batch.to_pylist()):
                yield locate(first + i), record, None

        reader.batch(batch, rows)
        start += batch.num_rows
        if reader.full:
            return


def _jsonl(reader: _Reader, path: Path) -> None:
    """JSONL in ~10 MB chunks of whole lines, each parsed by pyarrow or, failing that, by line."""
    for first_line, first_offset, chunk, batch in _parsed_chunks(path):

        def by_line(chunk: bytes = chunk, a: int = first_line, b: int = first_offset
                    ) -> Iterator[Record]:
            return _jsonl_records(io.BytesIO(chunk), a, b)

        if batch is None:
            reader.records(by_line())
        elif batch.num_rows:
            reader.batch(batch, by_line)
        if reader.full:
            return


def _parsed_chunks(path: Path) -> Iterator[tuple[int, int, bytes, pa.RecordBatch | None]]:
    """(first line, first byte offset, bytes, parsed batch or None) per chunk of whole lines.

    The next chunk is read and parsed in a background thread (pyarrow releases the
    GIL) while the caller validates and hashes the current one.
    """
    import pyarrow.json as pj

    def parse(chunk: bytes) -> pa.RecordBatch | None:
        try:
            chunk.decode("utf-8")  # pyarrow does not check; the record path says where
            table = pj.read_json(io.BytesIO(chunk), read_options=pj.ReadOptions(
                block_size=max(len(chunk) // 32, 1 << 16)))
        except (UnicodeDecodeError, pa.ArrowInvalid, pa.ArrowTypeError,
                pa.ArrowNotImplementedError):
            return None
        batches = table.combine_chunks().to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([])
        return batch if valid(batch) else None  # the record path reads it instead

    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as pool:
        if f.read(3) != codecs.BOM_UTF8:  # a byte-order mark is not part of the data
            f.seek(0)

        def read_next() -> tuple[bytes, pa.RecordBatch | None] | None:
            chunk = f.read(CHUNK)
            if not chunk:
                return None
            chunk += f.readline()
            return chunk, parse(chunk)

        pending = pool.submit(read_next)
        line, offset = 1, 0
        while (item := pending.result()) is not None:
            pending = pool.submit(read_next)
            chunk, batch = item
            yield line, offset, chunk, batch
            line += chunk.count(b"\n")
            offset += len(chunk)


# ---------------------------------------------------------------- readers

def _jsonl_records(f: Any, first_line: int = 1, first_offset: int = 0) -> Iterator[Record]:
    offset = first_offset
    for lineno, raw in enumerate(f, first_line):
        where = f"line {lineno}"
        start, offset = offset, offset + len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield where, None, (f"bytes that are not UTF-8 at byte offset {start + err.start} "
                                "of the file; re-encode the file as UTF-8")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield where, None, (f"malformed JSON ({err.msg} at column {err.colno}); "
                                "fix the line or remove it")
            continue
        except RecursionError:
            yield where, None, "JSON nested too deeply to be a task record; fix the line"
            continue
        problem = _not_text(record)
        if problem:
            yield where, None, problem
            continue
        if not isinstance(record, dict):
            yield where, None, (f"expected a JSON object, got {type(record).__name__}; "
                                "write one object per line")
            continue
        yield where, record, None


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    data = read_utf8(path, DataError)
    if not data.strip():
        raise DataError(f"{path} is empty: it has no examples; add examples or remove the task")
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: malformed JSON ({err.msg} at column "
                        f"{err.colno}); fix the file") from err
    except RecursionError as err:
        raise DataError(f"{path}: JSON nested too deeply to hold task records; fix the "
                        "file") from err
    items = doc.get("examples") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of records or an object with an "
                        "'examples' list; restructure the file")
    for i, record in enumerate(items):
        where = f"example {i}"
        if isinstance(record, dict):
            problem = _not_text(record)
            yield (where, None, problem) if problem else (where, record, None)
        else:
            yield where, None, f"expected a JSON object, got {type(record).__name__}"


def _not_text(record: Any) -> str | None:
    """A problem when a parsed record holds a string that is not text (a lone surrogate
    escape such as \\ud800 decodes, but has no UTF-8 form)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return ("a lone surrogate escape (e.g. \\ud800) that is no character; "
                "fix the string or remove it")
    return None


def find_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(byte offset, line) of the first bytes that are not UTF-8, or ``None``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                # err.start counts from the start of the decoder's pending bytes plus chunk.
                pending = len(err.object) - len(chunk)
                at = offset - pending + err.start
                return at, lines + chunk.count(b"\n", 0, max(0, at - offset)) + 1
            offset += len(chunk)
            lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return offset, lines + 1
    return None


def _csv_bad_line(path: Path) -> int | None:
    """The line of the first CSV row whose field count differs from the header's."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        for row in rows:
            if header is not None and len(row) != len(header):
                return rows.line_num
    return None


def _csv_batches(path: Path, text_columns: frozenset[str] | set[str] = frozenset()
                 ) -> Iterator[pa.RecordBatch]:
    """CSV batches; ``text_columns`` are read as strings whatever they look like (a
    quoted "5" target stays the text 5)."""
    import pyarrow.csv as pcsv

    def check_utf8(err: Exception | None = None) -> None:
        bad = find_bad_utf8(path)
        if bad is not None:
            raise DataError(f"{path} line {bad[1]}: bytes that are not UTF-8 at byte offset "
                            f"{bad[0]}; re-encode the file as UTF-8") from err

    types = {name: pa.string() for name in text_columns}
    try:
        for batch in pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=16 << 20),
                                   convert_options=pcsv.ConvertOptions(column_types=types)):
            batch.schema.names  # decodes the header: bad bytes there raise here  # noqa: B018
            if any(pa.types.is_binary(t) or pa.types.is_large_binary(t)
                   for t in batch.schema.types):
                check_utf8()  # pyarrow reads text with bad bytes as binary
            yield batch
    except UnicodeDecodeError as err:  # bad bytes in the header
        check_utf8(err)
        raise DataError(f"{path}: bytes that are not UTF-8; re-encode the file as UTF-8") from err
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        check_utf8(err)
        line = _csv_bad_line(path)
        where = f" line {line}" if line else ""
        raise DataError(f"{path}{where}: cannot read the CSV ({err}); fix the file") from err


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=8 * BATCH)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: the Parquet file holds names or strings that are not "
                        "UTF-8; write it again with text columns as UTF-8") from err
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: cannot read the Parquet file ({err}); fix the file") from err


def _dataset_dir_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{path} is a directory but not a saved `datasets` dataset "
                        "(save_to_disk); point at a file or a dataset directory") from err
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{path} holds several splits ({', '.join(ds)}); point at one of them, "
                        f"e.g. {path / next(iter(ds))}")
    yield from ds.data.to_batches(max_chunksize=8 * BATCH)


def hf_spec(spec: str) -> tuple[str, str | None, str | None, str]:
    """``hf:ID[:CONFIG][@REVISION][?split=SPLIT]`` as (id, config, revision, split).

    The revision (a branch, tag or commit) pins what is downloaded; the split defaults
    to ``train``.
    """
    rest, _, query = spec[3:].partition("?")
    split = "train"
    if query:
        key, _, value = query.partition("=")
        if key != "split" or not value:
            raise NotFoundError(f"{spec}: after '?' only split=NAME is understood "
                                "(hf:ID[:CONFIG][@REVISION][?split=SPLIT])")
        split = value
    rest, _, revision = rest.partition("@")
    ident, _, config = rest.partition(":")
    if not ident:
        raise NotFoundError(f"{spec}: no dataset id (hf:ID[:CONFIG][@REVISION][?split=SPLIT])")
    return ident, config or None, revision or None, split


def _hf_batches(spec: str) -> Iterator[pa.RecordBatch]:
    """``hf:ID[:CONFIG][@REVISION][?split=SPLIT]`` from the Hugging Face hub (needs the
    network)."""
    import datasets

    ident, config, revision, split = hf_spec(spec)
    try:
        ds = datasets.load_dataset(ident, config, split=split, revision=revision)
    except Exception as err:  # the hub raises many kinds; all mean "cannot get it"
        raise NotFoundError(
            f"cannot load {spec} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); check the id, config, revision "
            "and split (hf:ID[:CONFIG][@REVISION][?split=SPLIT]: '@' names a revision, the "
            "split is written ?split=NAME), and the network, or download the data and give "
            "its path instead"
        ) from err
    yield from ds.data.to_batches(max_chunksize=8 * BATCH)


# ---------------------------------------------------------------- fast path

def _fast_batch(batch: pa.RecordBatch, builder: TaskBuilder, m: FieldMapping,
                template: Template) -> None:
    names = set(batch.schema.names)
    if isinstance(m.choices, list) or m.prompt not in names:
        raise _Stop
    kind = m.kind or ("mc" if m.choices in names else "gen" if m.target in names else None)
    if kind is None or (builder.kind is not None and kind != builder.kind):
        raise _Stop
    prompt = _string_column(batch, m.prompt)
    if len(batch) and pc.min(pc.binary_length(prompt)).as_py() == 0:
        raise _Stop
    columns = {"prompt": prompt}
    for field in template.fields:
        if field != "prompt":
            if field not in names:
                raise _Stop
            columns[field] = _string_column(batch, field)
    text = format_column(template, columns)
    if kind == "mc":
        if m.answer not in names:
            raise _Stop
        choices, answer = batch.column(m.choices), batch.column(m.answer)
        if not (pa.types.is_list(choices.type) or pa.types.is_large_list(choices.type)) or \
                not pa.types.is_string(choices.type.value_type) or \
                not pa.types.is_integer(answer.type) or choices.null_count or answer.null_count:
            raise _Stop
        flat = pc.list_flatten(choices)
        lens = pc.list_value_length(choices)
        if flat.null_count or (len(batch) and (
            pc.min(lens).as_py() < 2 or pc.min(answer).as_py() < 0
            or pc.any(pc.greater_equal(answer, lens)).as_py()
        )):
            raise _Stop
        joined = _check_distinct(choices, lens)
        builder.add_arrow("mc", text, prompt, choices, answer.cast(pa.int64()), None,
                          joined=joined)
    else:
        if m.target not in names:
            raise _Stop
        target = batch.column(m.target)
        if target.null_count:
            raise _Stop
        if pa.types.is_list(target.type) or pa.types.is_large_list(target.type):
            if not pa.types.is_string(target.type.value_type) or \
                    pc.list_flatten(target).null_count or \
                    (len(batch) and pc.min(pc.list_value_length(target)).as_py() < 1):
                raise _Stop
        elif not pa.types.is_string(target.type):
            raise _Stop
        builder.add_arrow("gen", text, prompt, None, None, target)


def _string_column(batch: pa.RecordBatch, name: str) -> pa.Array:
    col = batch.column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
        raise _Stop
    return col


def _check_distinct(choices: pa.Array, lens: pa.Array) -> pa.Array:
    """Raise _Stop if a list repeats a choice or a choice holds the separator U+001F.

    Returns the choices joined by U+001F (the canonical string reuses them).
    Repeats are checked once per distinct list of choices (tasks reuse a few lists).
    """
    joined = pc.binary_join(choices, US)
    separators = pc.sum(pc.count_substring(joined, US)).as_py() or 0
    if separators != (pc.sum(lens).as_py() or 0) - len(choices):
        raise _Stop  # some choice contains U+001F itself
    for text in pc.unique(joined).to_pylist():
        parts = text.split(US)
        if len(set(parts)) != len(parts):
            raise _Stop
    return joined
