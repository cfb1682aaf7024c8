"""`recsys schema export` and `--schema-dir`: the reviewed contract and schema kept in the repository.

A first run infers DATA_ROOT/contract.json and curates DATA_ROOT/schema.pbtxt beside the data; `export` copies
the pair into a directory under version control (schema/NAME), where a change to either shows up in code
review, and `run`/`compile --schema-dir DIR` read that pair instead of the data root's.
"""

from __future__ import annotations

import argparse
import posixpath
from typing import Tuple

from pipeline import config as C
from pipeline.cli_common import CliError


class SchemaDirAction(argparse.Action):
    """`--schema-dir DIR` fills --contract and --schema with DIR's pair at parse time, so every later check of
    --contract (e.g. compile's BigQuery one) sees it; one given beside it leaves a mismatch reviewed_files reports."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        contract, schema = C.schema_dir_files(value)
        namespace.contract = namespace.contract or contract
        namespace.schema = namespace.schema or schema


def reviewed_files(args) -> Tuple[str, str]:
    """(contract, schema) the run reads: --schema-dir's pair, or --contract and --schema ('' = beside the data)."""
    contract, schema = args.contract or "", args.schema or ""
    schema_dir = getattr(args, "schema_dir", None)
    if not schema_dir:
        return contract, schema
    pair = C.schema_dir_files(schema_dir)
    if (contract, schema) != pair:
        contract_in, schema_in = C.schema_dir_files("DIR")
        stands_for = f"--contract {contract_in} --schema {schema_in}"
        raise CliError(f"--schema-dir DIR stands for {stands_for}; give either --schema-dir or --contract/--schema")
    import tensorflow as tf

    hint = (f"`recsys schema export --data-root {args.data_root} --to {schema_dir}` writes the pair there after a "
            f"first run on {args.data_root}")
    try:
        if not tf.io.gfile.isdir(schema_dir):
            raise CliError(f"--schema-dir {schema_dir}: no such directory ({hint})")
        missing = [path for path in pair if not tf.io.gfile.exists(path)]
    except tf.errors.OpError:  # storage this machine cannot reach: the contract's reader says so
        return pair
    if missing:
        raise CliError(f"--schema-dir {schema_dir}: no {posixpath.basename(missing[0])} ({hint})")
    return pair


def mismatch_advice(args, data_root: str, contract_file: str, schema_file: str) -> str:
    """What to do when the data no longer fits the reviewed contract (components/contract.py: ContractMismatch)."""
    schema_dir = getattr(args, "schema_dir", None)
    if schema_dir:
        return (f"fix the file, or if the data changed on purpose infer the pair again (`recsys run --data-root "
                f"{data_root}` without --schema-dir), review it and `recsys schema export --data-root {data_root} "
                f"--to {schema_dir}`")
    return f"fix the file, or edit {contract_file} (or delete it and {schema_file} to infer both again)"


def export(data_root: str, to: str) -> Tuple[str, str]:
    """Copies DATA_ROOT's reviewed contract.json and curated schema.pbtxt to `to` (atomically, each) and returns
    the two paths. Both are parsed first, the contract is checked against the files it describes, and the schema
    gets a header without this machine's paths or the date: the copies change only when the data's shape does."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from components import contract as contract_lib
    from components.atomic_io import atomic_write
    from components.schema_curation import reviewed_schema_text

    sources = C.schema_dir_files(data_root)
    missing = [posixpath.basename(path) for path in sources if not tf.io.gfile.exists(path)]
    if missing:
        raise CliError(f"{data_root} has no {' or '.join(missing)}: run `recsys run --data-root {data_root}` first "
                       f"(its first run infers the contract and curates the schema there)")
    contract_src, schema_src = sources
    with tf.io.gfile.GFile(contract_src, "r") as f:
        try:
            contract = contract_lib.DataContract.from_json(f.read())
        except (ValueError, TypeError) as e:
            raise CliError(f"{contract_src}: {e}") from None
    if "://" not in data_root:
        try:
            contract_lib.check_data(data_root, contract, contract_src)
        except contract_lib.ContractError as e:
            raise CliError(f"{e}: fix or delete {contract_src} (and {schema_src}) and run again before exporting") \
                from None
    with tf.io.gfile.GFile(schema_src, "r") as f:
        try:
            schema = text_format.Parse(f.read(), schema_pb2.Schema())
        except text_format.ParseError as e:
            raise CliError(f"{schema_src}: not a schema text proto ({e})") from None
    tf.io.gfile.makedirs(to)
    contract_dst, schema_dst = C.schema_dir_files(to)
    atomic_write(contract_dst, contract.to_json())
    atomic_write(schema_dst, reviewed_schema_text(schema))
    return contract_dst, schema_dst


def cmd_schema(args) -> int:
    if args.what == "export":
        paths = export(args.data_root, args.to)
        print(f"exported {' and '.join(paths)}: review the change and commit it; later runs read it with "
              f"`recsys run --data-root {args.data_root} --schema-dir {args.to}` (and `recsys compile --schema-dir "
              f"{args.to}`)")
    return 0

