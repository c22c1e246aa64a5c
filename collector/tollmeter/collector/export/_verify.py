"""Check an export directory from its files alone: Parquet against manifests, manifests
against each other (``_manifest.py``).

Every problem found is listed, each naming a file:

- ``missing_file``: a manifest whose Parquet file is gone;
- ``no_manifest``: a Parquet file no manifest describes (added, or exported before
  manifests existed);
- ``file_changed``: a file whose bytes no longer have the manifest's SHA-256;
- ``manifest_mismatch``: a manifest whose rows, sequences or head are not the file's;
- ``chain``: a manifest whose previous head is not the head of the file before it (a
  file and its manifest removed or replaced in between);
- ``gap`` / ``overlap``: batches that do not meet, or a sequence in two files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from tollmeter.collector.export._manifest import SUFFIX, Manifest, chain_head, manifest_name
from tollmeter.collector.storage._chain import GENESIS

__all__ = ["ExportProblem", "ExportVerdict", "verify_export"]


@dataclass(frozen=True, slots=True)
class ExportProblem:
    kind: str
    file: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "file": self.file, "detail": self.detail}


@dataclass(slots=True)
class ExportVerdict:
    files: int = 0
    rows: int = 0
    head: str = GENESIS.hex()
    problems: list[ExportProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "files": self.files,
            "rows": self.rows,
            "head": self.head,
            "problems": [problem.to_json() for problem in self.problems],
        }

    def describe(self) -> str:
        if self.ok:
            return f"OK: {self.rows} rows in {self.files} files, head {self.head}"
        lines = [f"BROKEN: {len(self.problems)} problems"]
        lines += [f"  {p.kind}: {p.file}: {p.detail}" for p in self.problems]
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_export(directory: Path) -> ExportVerdict:
    """Check every file under ``directory`` (see the module docstring)."""
    verdict = ExportVerdict()
    problems = verdict.problems
    parquet = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*.parquet")
        if not path.name.startswith(".")
    }
    manifests: list[Manifest] = []
    for path in sorted(directory.rglob(f"*{SUFFIX}")):
        relative = path.relative_to(directory).as_posix()
        try:
            manifest = Manifest.from_bytes(path.read_bytes())
        except ValueError as exc:
            problems.append(ExportProblem("manifest_mismatch", relative, str(exc)))
            continue
        if manifest_name(manifest.file) != relative:
            problems.append(ExportProblem("manifest_mismatch", relative, f"names {manifest.file}"))
            continue
        manifests.append(manifest)
    described = {manifest.file for manifest in manifests}
    problems.extend(
        ExportProblem("no_manifest", name, "no manifest describes this file")
        for name in sorted(parquet - described)
    )
    head = GENESIS
    batch: tuple[int, int] | None = None
    seen: set[int] = set()
    for manifest in sorted(manifests, key=lambda m: m.first_sequence):
        name = manifest.file
        if manifest.previous_head != head.hex():
            problems.append(
                ExportProblem(
                    "chain", name, "its previous head is not the head of the file before it"
                )
            )
        if (manifest.batch_after, manifest.batch_last) != batch:
            if batch is not None and manifest.batch_after != batch[1]:
                kind = "gap" if manifest.batch_after > batch[1] else "overlap"
                problems.append(
                    ExportProblem(
                        kind,
                        name,
                        f"its batch starts after {manifest.batch_after}, "
                        f"the one before ended at {batch[1]}",
                    )
                )
            batch = (manifest.batch_after, manifest.batch_last)
        head = bytes.fromhex(manifest.head)
        if name not in parquet:
            problems.append(ExportProblem("missing_file", name, "the manifest's file is gone"))
            continue
        path = directory / name
        file_changed = _sha256(path) != manifest.sha256
        if file_changed:
            problems.append(
                ExportProblem("file_changed", name, "its SHA-256 is not the manifest's")
            )
        table = pq.read_table(path)
        sequences = table.column("sequence").to_pylist()
        rows_head = chain_head(bytes.fromhex(manifest.previous_head), table)
        # The chain goes on from whichever of file and manifest is intact, so that one
        # edit is reported once and not again at the next file.
        if not file_changed:
            head = rows_head
        if (
            table.num_rows != manifest.rows
            or not sequences
            or (sequences[0], sequences[-1]) != (manifest.first_sequence, manifest.last_sequence)
            or rows_head.hex() != manifest.head
        ):
            problems.append(
                ExportProblem(
                    "manifest_mismatch", name, "its rows, sequences or head are not the file's"
                )
            )
        repeated = seen.intersection(sequences)
        if repeated:
            problems.append(
                ExportProblem("overlap", name, f"sequence {min(repeated)} is in another file")
            )
        seen.update(sequences)
        verdict.files += 1
        verdict.rows += table.num_rows
    verdict.head = head.hex()
    return verdict
