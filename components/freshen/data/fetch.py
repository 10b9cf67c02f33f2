"""Find the dataset folder: $FRESHEN_DATA_DIR, else `data.local_dir` if it exists, else
download `data.url` once into `data.download_dir`. Checksums in `data.sha256` are verified
wherever the files came from (set `data.verify: false` for a dataset of your own)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from freshen.atomic import replace_dir
from freshen.errors import DataError, FreshenError
from freshen.params.sections import DataParams
from freshen.progress import progress

log = logging.getLogger(__name__)
ENV_VAR = "FRESHEN_DATA_DIR"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksums(folder: Path, checksums: dict[str, str]) -> None:
    for rel, expected in (checksums or {}).items():
        path = folder / rel
        if not path.is_file():
            raise DataError(path, "file listed in data.sha256 is missing")
        got = sha256_file(path)
        if got != expected:
            raise DataError(
                path,
                f"sha256 mismatch: expected {expected}, got {got} "
                "(for a dataset of your own set data.verify=false or data.sha256={})",
            )


def resolve_dataset_dir(data: DataParams, root: Path) -> Path:
    looked = []
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FreshenError(f"{ENV_VAR}={env}: no such folder. Point it at a BEIR folder or unset it.")
        found = path
    else:
        found = None
        if data.local_dir:
            path = (root / Path(data.local_dir).expanduser()).resolve()
            looked.append(str(path))
            if path.is_dir():
                found = path
        if found is None and data.url:
            found = download(data.url, Path(data.download_dir).expanduser() / data.name, data.sha256, looked)
        if found is None:
            raise FreshenError(
                f"dataset '{data.name}' not found: looked in {', '.join(looked) or 'nowhere'}; "
                f"set data.local_dir in params.yaml, or the environment variable {ENV_VAR}, to a BEIR folder"
            )
    if data.verify:
        verify_checksums(found, data.sha256)
    return found


def download(url: str, dest: Path, checksums: dict[str, str], looked: list[str] = ()) -> Path:
    """Download a BEIR zip once; the folder appears only after its checksums pass. `looked`:
    the folders searched before, named when the download fails."""
    if (dest / "corpus.jsonl").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = Path(tmp) / "data.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with progress(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            also = f" (the dataset was not in {', '.join(looked)} either)" if looked else ""
            raise FreshenError(
                f"could not download {url} into {dest}: {getattr(exc, 'reason', exc)}{also}. "
                f"Set data.local_dir in params.yaml, or {ENV_VAR}, to a local copy."
            ) from None
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "x")
        except zipfile.BadZipFile as exc:
            raise DataError(url, f"not a zip archive ({exc}); nothing was written to {dest}") from None
        hits = list((Path(tmp) / "x").rglob("corpus.jsonl"))
        if not hits:
            raise DataError(url, "archive has no corpus.jsonl")
        folder = hits[0].parent
        verify_checksums(folder, checksums)
        staged = Path(tmp) / "ready"
        shutil.move(str(folder), staged)
        replace_dir(staged, dest)
    return dest
