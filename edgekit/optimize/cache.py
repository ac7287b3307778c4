"""The optimizer's cache: converted bundles and their measurements, keyed by (model hash, candidate, target,
board) plus everything else the result depends on (the data splits' hashes, the settings, edgekit's version).

A second run with the same arguments finds every conversion and measurement here and redoes none. Entries are
written to a temporary name and renamed, so an interrupted run leaves no half entry.
"""
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

import edgekit

CACHE_SCHEMA = 2


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekit", "optimize")


def cache_key(**parts: Any) -> str:
    record = dict(parts, schema=CACHE_SCHEMA, edgekit=edgekit.__version__)
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


class Cache:
    """bundles/<key>/ (a bundle directory) and results/<key>.json."""

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = os.path.abspath(root or default_dir())

    def bundle(self, key: str) -> Optional[str]:
        path = os.path.join(self.root, "bundles", key)
        return path if os.path.isfile(os.path.join(path, "manifest.json")) else None

    def put_bundle(self, key: str, src: str) -> str:
        """Move the bundle directory `src` into the cache under `key`; returns its cached path."""
        dest = os.path.join(self.root, "bundles", key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(dest):                       # an entry from an interrupted run without a manifest
            shutil.rmtree(dest)
        os.rename(src, dest)
        return dest

    def work_dir(self) -> str:
        """A scratch directory on the cache's file system (so put_bundle can rename from it)."""
        os.makedirs(self.root, exist_ok=True)
        return tempfile.mkdtemp(prefix=".work-", dir=self.root)

    def result(self, key: str) -> Optional[Dict[str, Any]]:
        path = os.path.join(self.root, "results", key + ".json")
        try:
            with open(path, "r", encoding="utf-8") as f:
                got = json.load(f)
        except (OSError, ValueError):
            return None
        return got if isinstance(got, dict) else None

    def put_result(self, key: str, value: Dict[str, Any]) -> None:
        d = os.path.join(self.root, "results")
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f)
        os.replace(tmp, os.path.join(d, key + ".json"))
