"""Safe files: how elbokit writes every file and directory, and reads hostile ones.

Writing
-------
Every output of the library -- a model directory, the tour's directory, the
CLI's predictions, scores and samples, reports, checkpoints -- goes through
one mechanism, in two steps::

    claim = files.claim("exp/model", kind="dir", overwrite=force, what="model directory",
                        replaceable=io.replaceable_model, protect=["exp/data.npy"])
    ...                                   # the long work (a fit): nothing written yet
    claim.commit(lambda tmp: write_everything_into(tmp))

or, when there is no work between the two, ``files.write_output(path, write, ...)``.

:func:`claim` takes the target before any work starts:

* an exclusive lock on the sibling ``.NAME.elbokit-lock`` (``flock``: the
  kernel drops it when its process dies, so a lock file left by a crash is
  recognised as stale and a concurrent run is refused at once:
  :class:`OutputBusyError`);
* refuses an existing target unless ``overwrite``, and even then replaces
  only what ``replaceable`` recognises (an elbokit model, the tour's output,
  a regular file), never a protected path (the input data, the working
  directory) nor a directory holding one (:class:`OutputExistsError`, worded
  for Python with ``overwrite=True`` and for the CLI with ``--force``);
* proves the place writable (a lock file is created and written there;
  :class:`OutputError` otherwise), so an unwritable or full ``--out`` is
  found before a fit, not after;
* removes stale temporaries of earlier crashes (``.NAME.elbokit-tmp-*``,
  and the older ``.NAME.partial`` / ``.NAME.XXXXXXXX`` of elbokit 0.1) and
  undoes a swap a crash interrupted (:func:`recover`).

:meth:`Claim.commit` writes into a temporary sibling ``.NAME.elbokit-tmp-*``
(files and directories get the umask's permissions), flushes it to disk and
swaps it in, so that the target is at every instant the complete old version
or the complete new one: ``renameat2(RENAME_EXCHANGE)`` (Linux; ``renamex_np``
on macOS) where the file system has it, else the old version is renamed
aside (``.NAME.elbokit-old-*``) and the new one renamed in (a crash between
the two is undone by the next claim or load).  The old version is deleted
last; on any failure the temporary is removed and the target left as it was
(:class:`OutputWriteError`).  A claim not committed is released, leaving
nothing behind, by :meth:`Claim.release` (or the ``with`` block ending).

Reading
-------
:func:`read_regular` and :func:`read_json` open regular files only (a FIFO
or a device is refused without blocking), read at most a size limit, and
bound the nesting depth of JSON.  :func:`check_input` applies the same rule
to a path another reader will open.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import stat
import sys
from pathlib import Path

try:  # POSIX; elsewhere an exclusive-create lock file (a stale one must be removed by hand)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_SUFFIX = ".elbokit-lock"
TMP_TAG = ".elbokit-tmp-"
OLD_TAG = ".elbokit-old-"
MANIFEST_NAME = "elbokit-output.json"
MANIFEST_FORMAT = "elbokit-output"
MAX_JSON_DEPTH = 64
MIN_FREE_BYTES = 1 << 20  # a claim refuses a file system with less free space than this


# ------------------------------------------------------------------ errors
class OutputExistsError(FileExistsError):
    """The target exists (or is protected) and may not be replaced.

    The message names the fix in Python's words (``overwrite=True``);
    :meth:`for_cli` gives it in the command line's (``--force``).
    """

    def __init__(self, template: str):
        self.template = template  # "{force}" marks where the fix is named (paths may hold braces)
        super().__init__(template.replace("{force}", "overwrite=True"))

    def for_cli(self) -> str:
        return self.template.replace("{force}", "--force")


class OutputBusyError(OutputExistsError):
    """Another live process holds the claim on the target."""


class OutputError(OSError):
    """The target's place cannot be written (permissions, read-only, full): found at claim time."""

    def __str__(self):
        return self.args[1] if len(self.args) > 1 else super().__str__()


class OutputWriteError(OutputError):
    """Writing the new version failed; the target was left as it was."""


# ------------------------------------------------------------------ reading
def _open_regular(path, what: str, error: type):
    """A read-only file object for ``path`` if it is a regular file (never blocks on a FIFO)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise error(f"{what} {path} does not exist.") from err
    except OSError as err:
        raise error(f"{what} {path} cannot be opened: {err.strerror}.") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file ({_file_type(info.st_mode)}): "
                    "elbokit reads regular files only.")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info.st_size


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path, *, max_bytes: int, what: str = "file", error: type = ValueError) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises ``error`` (ValueError by default) naming ``what`` if the path is
    missing, not a regular file (FIFO, device, directory) or too large.
    """
    f, size = _open_regular(path, what, error)
    with f:
        if size > max_bytes:
            raise error(f"{what} {path} is {size} bytes, more than the {max_bytes} elbokit reads.")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than the {max_bytes} bytes elbokit reads.")
    return data


def open_regular(path, *, what: str = "file", error: type = ValueError):
    """A binary file object for the regular file ``path`` (FIFOs and devices refused)."""
    return _open_regular(path, what, error)[0]


def read_json(path, *, max_bytes: int, what: str = "JSON file", error: type = ValueError,
              max_depth: int = MAX_JSON_DEPTH):
    """Parse a regular JSON file of at most ``max_bytes``, nested at most ``max_depth`` deep."""
    return parse_json(read_regular(path, max_bytes=max_bytes, what=what, error=error),
                      what=f"{what} {path}", error=error, max_depth=max_depth)


def parse_json(data: bytes, *, what: str, error: type = ValueError, max_depth: int = MAX_JSON_DEPTH):
    """JSON from bytes, with every failure (bad UTF-8, syntax, depth) raised as ``error``."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError as err:
        raise error(f"{what} is nested too deeply to be an elbokit file.") from err
    except (UnicodeDecodeError, ValueError) as err:
        raise error(f"{what} is corrupted: {err}.") from err
    if json_depth(value) > max_depth:
        raise error(f"{what} is nested more than {max_depth} levels deep: not an elbokit file.")
    return value


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def check_input(path, *, what: str = "input", allow_dir: bool = False) -> Path:
    """``path`` as a Path if it is a regular file (or, with ``allow_dir``, a directory).

    Raises
    ------
    FileNotFoundError
        If nothing is there.
    ValueError
        If it is a FIFO, a device or socket (reading would block or never end).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {path}.") from None
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be read: {err.strerror}.") from None
    if stat.S_ISREG(mode) or (allow_dir and stat.S_ISDIR(mode)):
        return path
    raise ValueError(f"{what} {path} is {_file_type(mode)}, not a regular file"
                     f"{' or a directory' if allow_dir else ''}: elbokit reads regular files only.")


# ------------------------------------------------------------------ what may be replaced
def replaceable_file(path: Path) -> str | None:
    """None if ``path`` is a regular file an output may replace, else why not."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    return "is a symbolic link" if stat.S_ISLNK(mode) else f"is {_file_type(mode)}"


def read_manifest(path: Path) -> dict | None:
    """The manifest elbokit wrote into the directory ``path``, or None."""
    try:
        manifest = read_json(path / MANIFEST_NAME, max_bytes=1 << 20)
    except (ValueError, OSError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
    return manifest if ok and isinstance(manifest.get("files"), list) else None


def foreign_entries(path: Path, ours, check_dir=None) -> list[str]:
    """Entries of the directory ``path`` that are not elbokit's own.

    ``ours(name)`` says whether a plain file of that name is elbokit's;
    a subdirectory counts as elbokit's when ``check_dir(subpath)`` is None.
    """
    foreign = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.is_dir():
            if check_dir is None or check_dir(Path(entry.path)) is not None:
                foreign.append(entry.name + "/")
        elif not (entry.is_file() and ours(entry.name)):
            foreign.append(entry.name)
    return foreign


def replaceable_output(kind: str, legacy=None, check_dir=None):
    """A ``replaceable`` test for directories written with ``commit(manifest=kind)``.

    The directory must hold the manifest of that kind, and nothing beyond
    the entries it lists (so that files a user added are never deleted).
    ``legacy(path)``, if given, recognises output of older versions without
    a manifest (None if recognised, else a reason).
    """
    def replaceable(path: Path) -> str | None:
        if not path.is_dir() or path.is_symlink():
            return "is not a directory elbokit wrote"
        manifest = read_manifest(path)
        if manifest is None or manifest.get("kind") != kind:
            return legacy(path) if legacy else f"is not elbokit {kind} output"
        listed = set(manifest["files"]) | {MANIFEST_NAME}
        foreign = foreign_entries(path, lambda name: name in listed,
                                  lambda p: None if p.name in listed and (
                                      check_dir is None or check_dir(p) is None) else "foreign")
        if foreign:
            return f"holds files elbokit did not write ({', '.join(foreign[:5])})"
        return None

    return replaceable


# ------------------------------------------------------------------ the claim
def _reached(step: str) -> None:
    """Called at each step of a commit; a test replaces it to kill the process there.

    Steps: ``"claimed"``, ``"written"`` (the temporary is complete), ``"aside"``
    (fallback swap: the old version renamed aside, the new one not yet in),
    ``"swapped"`` (the new version in place, the old one not yet deleted).
    """


def _sibling_prefix(path: Path) -> str:
    return "." + path.name[:160]


class Claim:
    """The exclusive right to (re)write ``path``, from :func:`claim` to commit or release.

    Attributes
    ----------
    path : Path
        The target.
    kind : {"file", "dir"}
    overwrite : bool
    """

    def __init__(self, path: Path, kind: str, overwrite: bool, what: str, replaceable, protect):
        self.path, self.kind, self.overwrite, self.what = path, kind, overwrite, what
        self.replaceable = replaceable or (replaceable_file if kind == "file" else _no_dir)
        self.protect = [Path(p) for p in protect]
        self._fd = None
        self._created: list[Path] = []
        self.committed = False

    # -------------------------------------------------------------- taking it
    @property
    def lock_path(self) -> Path:
        return self.path.parent / (_sibling_prefix(self.path) + LOCK_SUFFIX)

    def _take(self) -> None:
        self._check_protected()
        self._make_parents()
        try:
            self._fd = _lock(self.lock_path)
            _check_free_space(self.path.parent)
        except OutputBusyError:
            self._remove_parents()
            raise OutputBusyError(
                f"{self.path} is being written by another elbokit process ({_holder(self.lock_path)},"
                f" lock {self.lock_path}): wait for it to finish or choose another {self.what}"
                " ({force} does not override this).") from None
        except OSError as err:
            self.release()
            raise OutputError(err.errno, f"cannot write {self.what} {self.path}: "
                              f"{_explain(err)}; nothing was written.") from None
        try:
            recover(self.path, locked=True)
            remove_stale(self.path)
            self._check_existing()
        except BaseException:
            self.release()
            raise
        _reached("claimed")

    def _check_protected(self) -> None:
        target = _absolute(self.path)
        named = [(Path.cwd(), "the working directory")] + [(p, str(p)) for p in self.protect]
        for p, which in named:
            q = _absolute(p)
            if q == target or target in q.parents:
                holds = "is" if q == target else "holds"
                raise OutputExistsError(
                    f"{self.path} {holds} {which}, which elbokit never replaces, not even with "
                    f"{{force}}: choose another {self.what}.")

    def _check_existing(self) -> None:
        if not os.path.lexists(self.path):
            return
        if not self.overwrite:
            raise OutputExistsError(f"{self.path} already exists: choose another {self.what} "
                                    "or pass {force} to replace it.")
        reason = self.replaceable(self.path)
        if reason:
            raise OutputExistsError(f"{self.path} {reason}, so elbokit does not replace it, not "
                                    f"even with {{force}}: choose another {self.what}.")

    def _make_parents(self) -> None:
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                self._remove_parents()
                raise OutputError(err.errno, f"cannot create {p} for {self.what} {self.path}: "
                                  f"{_explain(err)}.") from None
            self._created.append(p)

    def _remove_parents(self) -> None:
        for p in reversed(self._created):
            try:
                p.rmdir()
            except OSError:
                break
        self._created = []

    # -------------------------------------------------------------- writing
    def commit(self, write, *, manifest: str | None = None) -> Path:
        """Write the new version with ``write(tmp)`` and swap it in; release the claim.

        Parameters
        ----------
        write : callable
            ``write(tmp)`` creates the file ``tmp`` (kind "file") or fills the
            existing empty directory ``tmp`` (kind "dir").
        manifest : str, optional
            For directories: record every entry written under this kind (see
            :func:`replaceable_output`), so that it can be replaced later.

        Returns
        -------
        Path
            The target.
        """
        if self._fd is None:
            raise RuntimeError(f"the claim on {self.path} was committed or released; claim it again.")
        suffix = "" if self.kind == "dir" else "".join(self.path.suffixes)  # writers that go by it
        tmp = self.path.parent / f"{_sibling_prefix(self.path)}{TMP_TAG}{secrets.token_hex(4)}{suffix}"
        try:
            if self.kind == "dir":
                os.mkdir(tmp, 0o777)
            write(tmp)
            if self.kind == "dir" and manifest is not None:
                _write_manifest(tmp, manifest)
            _fsync_tree(tmp)
            _reached("written")
            if os.path.lexists(self.path):
                self._check_existing()
            self._swap(tmp)
            self.committed = True
        except OutputExistsError:
            _remove(tmp)
            raise
        except OSError as err:
            why = _explain(err, self.path.parent)  # before the temporary goes (a full disk frees)
            _remove(tmp)
            raise OutputWriteError(err.errno, f"cannot write {self.what} {self.path}: "
                                   f"{why}; {self.path} was left as it was.") from err
        except BaseException:
            _remove(tmp)
            raise
        finally:
            self.release()
        return self.path

    def _swap(self, tmp: Path) -> None:
        target = self.path
        if not os.path.lexists(target):
            if not _rename_noreplace(tmp, target):
                raise FileExistsError(errno.EEXIST, f"{target} appeared while writing it")
        elif self.kind == "file":
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            _reached("swapped")
            _remove(tmp)  # now the old version
        else:
            aside = target.parent / f"{_sibling_prefix(target)}{OLD_TAG}{secrets.token_hex(4)}"
            os.rename(target, aside)
            try:
                _reached("aside")
                os.rename(tmp, target)
            except BaseException:  # put the old version back (a kill here: recover() does)
                os.rename(aside, target)
                raise
            _reached("swapped")
            _remove(aside)
        _fsync_dir(target.parent)

    # -------------------------------------------------------------- releasing
    def release(self) -> None:
        """Give the claim up: the lock file goes; directories made for it, if still empty, too."""
        if self._fd is not None:
            try:
                os.unlink(self.lock_path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if not self.committed:
            self._remove_parents()
        self._created = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):  # a claim dropped without release must not hold its lock forever
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _no_dir(path: Path) -> str | None:
    return "exists"


def claim(path, *, kind: str = "file", overwrite: bool = False, what: str = "output",
          replaceable=None, protect=()) -> Claim:
    """Take the target ``path`` for writing (see the module docstring).

    Parameters
    ----------
    path : str or Path
    kind : {"file", "dir"}
    overwrite : bool
        Whether an existing target may be replaced (if ``replaceable`` allows).
    what : str
        What the target is, for messages ("model directory", "output").
    replaceable : callable, optional
        ``replaceable(path)`` returns None if the existing ``path`` may be
        replaced, else the reason why not ("is not an elbokit model"). By
        default a regular file (kind "file"); nothing (kind "dir").
    protect : iterable of paths
        Paths that the target must neither be nor contain (the inputs); the
        working directory is always protected.

    Raises
    ------
    OutputExistsError, OutputBusyError, OutputError
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind={kind!r}: use 'file' or 'dir'.")
    c = Claim(Path(path), kind, overwrite, what, replaceable, protect)
    c._take()
    return c


def write_output(target, write, *, kind: str = "file", overwrite: bool = False,
                 what: str = "output", replaceable=None, protect=(),
                 manifest: str | None = None) -> Path:
    """Claim ``target`` (a path or a :class:`Claim` already held) and commit ``write`` to it."""
    held = target if isinstance(target, Claim) else claim(
        target, kind=kind, overwrite=overwrite, what=what, replaceable=replaceable, protect=protect)
    return held.commit(write, manifest=manifest)


def write_bytes(target, data: bytes | str, *, overwrite: bool = False, what: str = "output",
                protect=()) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to the file ``target`` safely."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return write_output(target, lambda tmp: Path(tmp).write_bytes(raw), overwrite=overwrite,
                        what=what, protect=protect)


# ------------------------------------------------------------------ stale files
def recover(path, *, locked: bool = False) -> bool:
    """Undo a swap that a crash interrupted: put the old version back where it was.

    Only the fallback swap (rename aside, rename in) has such a moment: if
    ``path`` is missing while a ``.NAME.elbokit-old-*`` sibling exists, that
    sibling is the complete old version and is renamed back.  Without
    ``locked``, this is done only when no live process holds the claim.

    Returns
    -------
    bool
        True if a version was put back.
    """
    path = Path(path)
    if os.path.lexists(path):
        return False
    asides = _siblings(path, OLD_TAG)
    if not asides:
        return False
    fd = None
    if not locked:
        try:
            fd = _lock(path.parent / (_sibling_prefix(path) + LOCK_SUFFIX))
        except OSError:  # busy, or a read-only place: leave it to the writer
            return False
    try:
        newest = max(asides, key=lambda p: p.lstat().st_mtime)
        os.rename(newest, path)
        return True
    except OSError:
        return False
    finally:
        if fd is not None:
            try:
                os.unlink(path.parent / (_sibling_prefix(path) + LOCK_SUFFIX))
            except OSError:
                pass
            os.close(fd)


def remove_stale(path) -> list[Path]:
    """Remove the temporaries that crashed writes of ``path`` left (the claim must be held).

    Recognised: ``.NAME.elbokit-tmp-*`` and ``.NAME.elbokit-old-*`` (when
    ``path`` exists), and elbokit 0.1's ``.NAME.partial`` files and
    ``.NAME.XXXXXXXX`` directories holding only model files.
    """
    path = Path(path)
    stale = _siblings(path, TMP_TAG) + (_siblings(path, OLD_TAG) if os.path.lexists(path) else [])
    stale += [p for p in _legacy_temporaries(path)]
    for p in stale:
        _remove(p)
    return stale


def _siblings(path: Path, tag: str) -> list[Path]:
    prefix = _sibling_prefix(path) + tag
    try:
        return [path.parent / n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        return []


_LEGACY_MODEL_FILES = {"config.json", "model.safetensors", "metrics.json"}


def _legacy_temporaries(path: Path) -> list[Path]:
    found = []
    partial = path.parent / f".{path.name}.partial"
    if partial.is_file() and not partial.is_symlink():
        found.append(partial)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}$")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return found
    for n in names:
        p = path.parent / n
        if pattern.match(n) and p.is_dir() and not p.is_symlink():
            entries = os.listdir(p)
            if set(entries) <= _LEGACY_MODEL_FILES and all((p / e).is_file() for e in entries):
                found.append(p)
    return found


# ------------------------------------------------------------------ system calls
def _lock(lock_path: Path) -> int:
    """An exclusive lock on ``lock_path`` (created), as an open descriptor holding our pid."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    if fcntl is None:  # pragma: no cover - no flock: the lock file's existence is the lock
        try:
            fd = os.open(lock_path, flags | os.O_EXCL, 0o666)
        except FileExistsError:
            raise OutputBusyError("busy") from None
    else:
        while True:
            fd = os.open(lock_path, flags, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError("busy") from None
            try:  # the last holder may have unlinked this file between our open and our lock
                held, named = os.fstat(fd), os.stat(lock_path)
                if (held.st_ino, held.st_dev) == (named.st_ino, named.st_dev):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
    except OSError:
        os.close(fd)
        try:
            os.unlink(lock_path)
        except OSError:
            pass
        raise
    return fd


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
        return f"pid {int(pid)}"
    except (OSError, ValueError):
        return "pid unknown"


def _check_free_space(directory: Path) -> None:
    try:
        info = os.statvfs(directory)
    except (OSError, AttributeError):
        return
    free = info.f_bavail * info.f_frsize
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"only {free} bytes are free there")


def _explain(err: OSError, directory: Path | None = None) -> str:
    """The cause of a failed write in words (a writer's errno-less error on a full disk too)."""
    hints = {errno.ENOSPC: "the file system is full", errno.EDQUOT: "the disk quota is exceeded",
             errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for the system"}
    if err.errno is None and directory is not None and _nearly_full(directory):
        return f"the file system is full ({err})"
    text = hints.get(err.errno) or err.strerror or str(err)
    standard = os.strerror(err.errno) if err.errno else None
    detail = err.strerror if err.strerror and err.strerror not in (text, standard) else ""
    return text + (f" ({detail})" if detail else "")


def _nearly_full(directory: Path) -> bool:
    try:
        info = os.statvfs(directory)
    except (OSError, AttributeError):
        return False
    return info.f_bavail * info.f_frsize < 1 << 20


def _absolute(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass


def _write_manifest(directory: Path, kind: str) -> None:
    names = sorted(os.listdir(directory))
    (directory / MANIFEST_NAME).write_text(json.dumps(
        {"format": MANIFEST_FORMAT, "kind": kind, "files": names}, indent=1))


def _fsync_tree(p: Path) -> None:
    if p.is_dir():
        for root, _, names in os.walk(p):
            for n in names:
                _fsync_file(Path(root) / n)
            _fsync_dir(Path(root))
    else:
        _fsync_file(p)


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # Linux renameat2 flags
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", -1),
                getattr(errno, "EOPNOTSUPP", -1)}
_libc = None


def _rename_call():
    """The C function behind the atomic renames, with its flags, or None."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover
            _libc = False
    if not _libc:
        return None
    if sys.platform.startswith("linux") and hasattr(_libc, "renameat2"):
        fn = _libc.renameat2
        return (lambda a, b, flag: fn(_AT_FDCWD, a, _AT_FDCWD, b, flag)), {
            "exchange": _RENAME_EXCHANGE, "noreplace": _RENAME_NOREPLACE}
    if sys.platform == "darwin" and hasattr(_libc, "renamex_np"):  # pragma: no cover
        fn = _libc.renamex_np
        return (lambda a, b, flag: fn(a, b, flag)), {"exchange": 0x2, "noreplace": 0x4}
    return None


def _atomic_rename(src: Path, dst: Path, how: str) -> bool:
    """renameat2 / renamex_np with ``how`` ("exchange" or "noreplace"); False if unsupported."""
    call = _rename_call()
    if call is None:
        return False
    fn, flags = call
    if fn(os.fsencode(src), os.fsencode(dst), flags[how]) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False where the system cannot."""
    return _atomic_rename(a, b, "exchange")


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (then False); atomic."""
    try:
        if _atomic_rename(src, dst, "noreplace"):
            return True
    except FileExistsError:
        return False
    if src.is_dir() and not src.is_symlink():
        if os.path.lexists(dst):
            return False
        os.rename(src, dst)  # fails on a non-empty directory that appeared meanwhile
        return True
    try:
        os.link(src, dst)  # fails if dst exists
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some file systems)
        if os.path.lexists(dst):
            return False
        os.rename(src, dst)
        return True
    os.unlink(src)
    return True
