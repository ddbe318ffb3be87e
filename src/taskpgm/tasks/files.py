"""The user's own task files: JSONL, JSON, CSV, Parquet, ``datasets`` directories and ``hf:``.

A record becomes an example through a :class:`FieldMapping`: by default
``prompt``, ``choices`` (a list) and ``answer`` (index of the correct choice,
or a list of indices when several are correct) for multiple choice, or
``prompt`` and ``target`` (a string or a list of acceptable strings) for
generative tasks.

Tabular sources are read as Arrow record batches and, when a batch is clean,
validated and hashed column-wise (the fast path). Anything unusual (a null, a
wrongly typed value, an out-of-range answer, a file pyarrow cannot parse) sends
the whole source through the record-by-record path, which is the authority: it
accepts or rejects every record itself and says exactly where and why.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from taskpgm.errors import DataError, NotFoundError
from taskpgm.tasks.builder import BATCH, Problems, TaskBuilder
from taskpgm.tasks.formatting import US, Template, format_column, format_record
from taskpgm.tasks.loadprogress import LoadProgress

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class FieldMapping(BaseModel):
    """Which source fields hold the prompt, the choices and the answer (or the target)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = "prompt"
    # A field holding a list of choices, or a list of fields holding one choice each.
    choices: str | list[str] = "choices"
    # Index of the correct choice (or a list of indices when several are correct).
    answer: str = "answer"
    # Reference completion (or a list of acceptable completions) of a generative task.
    target: str = "target"
    # Force the kind instead of detecting it from the fields present.
    kind: str | None = Field(None, pattern="^(mc|gen)$")


class _Stop(Exception):
    """Raised inside the fast path when a batch needs the record-by-record path."""


def is_file_spec(spec: str) -> bool:
    """A spec that names a local file or ``datasets`` directory (or ``hf:``)."""
    return spec.startswith("hf:") or spec.lower().endswith(SUFFIXES) or os.path.isdir(spec) \
        or os.sep in spec or spec.startswith(".")


def task_name_for(spec: str) -> str:
    """The default task name of a file spec: the file name without its suffix."""
    if spec.startswith("hf:"):
        return spec[3:].split("@")[0].replace("/", "__").replace(":", "__")
    path = Path(spec)
    return path.stem if path.suffix.lower() in SUFFIXES else path.name


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
        NotFoundError: the file does not exist.
        DataError: the file is empty or has bad records (all of them are listed).
    """
    if spec.startswith("hf:"):
        batches = _hf_batches(spec)
        return _load_arrow(spec, lambda: batches, builder, mapping, template, max_examples,
                           locate=lambda i: f"row {i}")
    path = Path(spec)
    if not path.exists():
        raise NotFoundError(f"task file {spec} does not exist; check the path "
                            f"(supported: {', '.join(SUFFIXES)}, a datasets directory, hf:ID)")
    if path.is_dir():
        return _load_arrow(spec, lambda: _dataset_dir_batches(path), builder, mapping, template,
                           max_examples, locate=lambda i: f"row {i}")
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"{spec} is empty: it has no examples; add examples or remove the task")
    if suffix == ".jsonl":
        try:
            return _load_arrow(spec, lambda: _jsonl_batches(path), builder, mapping, template,
                               max_examples, locate=None)
        except _Stop:
            return _load_records(spec, _jsonl_records(path), builder, mapping, template,
                                 max_examples)
    if suffix == ".json":
        return _load_records(spec, _json_records(path), builder, mapping, template, max_examples)
    if suffix == ".csv":
        return _load_arrow(spec, lambda: _csv_batches(path), builder, mapping, template,
                           max_examples, locate=lambda i: f"line {i + 2}")
    if suffix == ".parquet":
        return _load_arrow(spec, lambda: _parquet_batches(path), builder, mapping, template,
                           max_examples, locate=lambda i: f"row {i}")
    raise DataError(f"{spec}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


# ---------------------------------------------------------------- record-by-record path

def _load_records(
    spec: str,
    records: Iterator[tuple[str, dict[str, Any] | None, str | None]],
    builder: TaskBuilder,
    mapping: FieldMapping,
    template: Template,
    max_examples: int | None,
) -> int:
    """Validate and add records one by one; ``records`` yields (where, record, problem)."""
    problems = Problems(spec)
    progress = LoadProgress(builder.task)
    n = 0
    checked_mapping = False
    for where, record, problem in records:
        if problem is not None or record is None:
            problems.add(where, problem or "not a record")
            continue
        if not checked_mapping:
            _check_mapping(spec, set(record), mapping, template, first=where)
            checked_mapping = True
        add_record(record, where, builder, mapping, template, problems)
        n += 1
        progress.update()
        if max_examples is not None and n >= max_examples:
            break
    if n == 0 and not problems:
        raise DataError(f"{spec} is empty: it has no examples; add examples or remove the task")
    problems.raise_if_any()
    return n


def add_record(
    record: dict[str, Any],
    where: str,
    builder: TaskBuilder,
    mapping: FieldMapping,
    template: Template,
    problems: Problems,
) -> None:
    """Validate one record against ``mapping`` and add it to ``builder`` (or note a problem)."""
    prompt = record.get(mapping.prompt)
    if prompt is None:
        problems.add(where, f"missing field {mapping.prompt!r} (the prompt); the record has "
                            f"fields {sorted(record)}; add it or map another field with prompt:")
        return
    if not isinstance(prompt, str) or not prompt:
        problems.add(where, f"field {mapping.prompt!r} must be a non-empty string, got "
                            f"{_show(prompt)}; fix the value")
        return
    kind = mapping.kind or _detect_kind(record, mapping)
    if kind is None:
        problems.add(where, f"no field {_name(mapping.choices)!r} (multiple choice) or "
                            f"{mapping.target!r} (generative); the record has fields "
                            f"{sorted(record)}; add one or give a field mapping")
        return
    if not builder.check_kind(kind, where, problems):  # type: ignore[arg-type]
        return
    try:
        text = format_record(template, record, prompt)
    except KeyError as err:
        problems.add(where, f"the prompt template needs field {err.args[0]!r}, which this record "
                            "lacks; add it or change the template")
        return
    if kind == "mc":
        choices = _choices(record, mapping, where, problems)
        if choices is None:
            return
        correct = _answer(record, mapping, len(choices), where, problems)
        if correct is None:
            return
        builder.add(text, prompt, choices, correct)
    else:
        targets = _targets(record, mapping, where, problems)
        if targets is not None:
            builder.add(text, prompt, None, (), targets)


def _detect_kind(record: dict[str, Any], mapping: FieldMapping) -> str | None:
    fields = mapping.choices if isinstance(mapping.choices, list) else [mapping.choices]
    if all(f in record for f in fields):
        return "mc"
    if mapping.target in record:
        return "gen"
    return None


def _choices(record: dict[str, Any], m: FieldMapping, where: str, problems: Problems
             ) -> list[str] | None:
    if isinstance(m.choices, list):
        value: Any = [record.get(f) for f in m.choices]
    else:
        value = record.get(m.choices)
        if isinstance(value, str) and value.startswith("["):  # a JSON list in a CSV cell
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
    name = _name(m.choices)
    if value is None:
        problems.add(where, f"missing field {name!r} (the choices); add it")
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        problems.add(where, f"field {name!r} must be a list of strings, got {_show(value)}; "
                            "fix the value")
        return None
    if len(value) < 2:
        problems.add(where, f"field {name!r} has {len(value)} choice(s); a multiple-choice "
                            "example needs at least 2: add choices or make the task generative")
        return None
    if len(set(value)) != len(value):
        dup = next(c for c in value if value.count(c) > 1)
        problems.add(where, f"field {name!r} lists the choice {dup!r} more than once; "
                            "choices must be distinct: remove the duplicate")
        return None
    return value


def _answer(record: dict[str, Any], m: FieldMapping, n: int, where: str, problems: Problems
            ) -> list[int] | None:
    value = record.get(m.answer)
    if value is None:
        problems.add(where, f"missing field {m.answer!r} (index of the correct choice); add it")
        return None
    values = value if isinstance(value, list) and value else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        problems.add(where, f"field {m.answer!r} must be an integer index into the choices "
                            f"(0..{n - 1}) or a list of them, got {_show(value)}; fix the value")
        return None
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        problems.add(where, f"answer index {bad[0]} is out of range for {n} choices "
                            f"(valid: 0..{n - 1}); fix the answer or the choices")
        return None
    return list(dict.fromkeys(values))


def _targets(record: dict[str, Any], m: FieldMapping, where: str, problems: Problems
             ) -> list[str] | None:
    value = record.get(m.target)
    if value is None:
        problems.add(where, f"missing field {m.target!r} (the reference completion); add it")
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        problems.add(where, f"field {m.target!r} must be a string or a non-empty list of "
                            f"strings, got {_show(value)}; fix the value")
        return None
    return values


def _check_mapping(spec: str, columns: set[str], m: FieldMapping, template: Template,
                   first: str) -> None:
    """A field the user mapped (or the template names) must exist in the source at all."""
    defaults = FieldMapping()
    named: list[tuple[str, str]] = []
    for role in ("prompt", "answer", "target"):
        value = getattr(m, role)
        if value != getattr(defaults, role):
            named.append((role, value))
    if m.choices != defaults.choices:
        named += [("choices", c) for c in (m.choices if isinstance(m.choices, list)
                                            else [m.choices])]
    named += [("template", f) for f in template.fields if f != "prompt"]
    missing = [(r, f) for r, f in named if f not in columns]
    if m.kind == "gen":
        missing = [(r, f) for r, f in missing if r not in ("choices", "answer")]
    if m.kind == "mc" or any(r in ("choices", "answer") for r, _ in named):
        missing = [(r, f) for r, f in missing if r != "target"]
    if missing:
        role, field = missing[0]
        raise DataError(
            f"{spec}: the field mapping names {role} field {field!r}, which is not a column of "
            f"the file ({first} has {sorted(columns)}); fix the mapping in the collection file"
        )


def _name(choices: str | list[str]) -> str:
    return choices if isinstance(choices, str) else "/".join(choices)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, bytes) else repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


# ---------------------------------------------------------------- readers

def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
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
            if not isinstance(record, dict):
                yield where, None, (f"expected a JSON object, got {type(record).__name__}; "
                                    "write one object per line")
                continue
            yield where, record, None


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    data = _read_text(path)
    if not data.strip():
        raise DataError(f"{path} is empty: it has no examples; add examples or remove the task")
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: malformed JSON ({err.msg} at column "
                        f"{err.colno}); fix the file") from err
    items = doc.get("examples") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of records or an object with an "
                        "'examples' list; restructure the file")
    for i, record in enumerate(items):
        where = f"example {i}"
        if isinstance(record, dict):
            yield where, record, None
        else:
            yield where, None, f"expected a JSON object, got {type(record).__name__}"


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path} line {line}: bytes that are not UTF-8 at byte offset "
                        f"{err.start}; re-encode the file as UTF-8") from err


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


def _jsonl_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pj

    try:
        reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=16 << 20),
                              parse_options=pj.ParseOptions(unexpected_field_behavior="ignore"))
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise _Stop from err


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pcsv

    try:
        yield from pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        bad = find_bad_utf8(path)
        if bad is not None:
            raise DataError(f"{path} line {bad[1]}: bytes that are not UTF-8 at byte offset "
                            f"{bad[0]}; re-encode the file as UTF-8") from err
        raise DataError(f"{path}: cannot read the CSV ({err}); fix the file") from err


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=8 * BATCH)
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


def _hf_batches(spec: str) -> Iterator[pa.RecordBatch]:
    """``hf:ID[:CONFIG][@SPLIT]`` from the Hugging Face hub (needs the network)."""
    import datasets

    rest, _, split = spec[3:].partition("@")
    ident, _, config = rest.partition(":")
    try:
        ds = datasets.load_dataset(ident, config or None, split=split or "train")
    except Exception as err:  # the hub raises many kinds; all mean "cannot get it"
        raise NotFoundError(
            f"cannot load {spec} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); check the id, config and split, "
            "and the network, or download the data and give its path instead"
        ) from err
    yield from ds.data.to_batches(max_chunksize=8 * BATCH)


# ---------------------------------------------------------------- fast path

def _load_arrow(
    spec: str,
    batches: Any,
    builder: TaskBuilder,
    mapping: FieldMapping,
    template: Template,
    max_examples: int | None,
    locate: Any,
) -> int:
    """Fast column-wise load; on anything unusual, redo with the record path (or raise _Stop)."""
    progress = LoadProgress(builder.task)
    n = 0
    snapshot = builder.selector.total
    fast_ok = True
    try:
        first = True
        for batch in batches():
            if first:
                _check_mapping(spec, set(batch.schema.names), mapping, template,
                               first="the first record")
                first = False
            if max_examples is not None and n + batch.num_rows > max_examples:
                batch = batch.slice(0, max_examples - n)
            _fast_batch(batch, builder, mapping, template)
            n += batch.num_rows
            progress.update(batch.num_rows)
            if max_examples is not None and n >= max_examples:
                break
        if first:
            raise DataError(f"{spec} is empty: it has no examples; add examples or remove "
                            "the task")
    except _Stop:
        fast_ok = False
    if fast_ok:
        return n
    if builder.selector.total != snapshot or locate is None:
        # Part of the source went through the fast path: start over record by record.
        builder.reset()
        if locate is None:
            raise _Stop
    def records() -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        i = 0
        for batch in batches():
            for record in batch.to_pylist():
                yield locate(i), record, None
                i += 1

    return _load_records(spec, records(), builder, mapping, template, max_examples)


def _fast_batch(batch: pa.RecordBatch, builder: TaskBuilder, m: FieldMapping,
                template: Template) -> None:
    names = set(batch.schema.names)
    if isinstance(m.choices, list) or m.prompt not in names:
        raise _Stop
    kind = m.kind or ("mc" if m.choices in names else "gen" if m.target in names else None)
    if kind is None or (builder.kind is not None and kind != builder.kind):
        raise _Stop
    prompt = _string_column(batch, m.prompt)
    if pc.any(pc.equal(pc.utf8_length(prompt), 0)).as_py():
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
        if flat.null_count or len(batch) and (
            pc.min(lens).as_py() < 2 or pc.min(answer).as_py() < 0
            or pc.any(pc.greater_equal(answer, lens)).as_py()
            or pc.any(pc.match_substring(flat, US)).as_py()
        ):
            raise _Stop
        _check_distinct(choices)
        builder.add_arrow("mc", text, prompt, choices, answer.cast(pa.int64()), None)
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


def _check_distinct(choices: pa.Array) -> None:
    """Raise _Stop if some list repeats a choice (checked once per distinct list of choices)."""
    encoded = pc.binary_join(choices, US).dictionary_encode()
    for joined in encoded.dictionary.to_pylist():
        parts = joined.split(US)
        if len(set(parts)) != len(parts):
            raise _Stop
