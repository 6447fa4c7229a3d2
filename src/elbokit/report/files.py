"""Writing a report: the page and its folder of CSV tables, each replaced whole.

At every instant the old or the new version of each is complete: the CSV
folder is written as a temporary sibling and swapped in, the page is written
to a temporary file and renamed over the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_folder(folder, files: dict) -> Path:
    """Replace the folder ``folder`` by one holding ``files`` (name -> text)."""
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def write_files(page_path, page: str, folder, files: dict) -> None:
    """The CSV folder first, then the page that links to it."""
    Path(page_path).parent.mkdir(parents=True, exist_ok=True)
    write_folder(folder, files)
    write_text(page_path, page)
