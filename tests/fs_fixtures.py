"""Whole folders as data, to compare an output before and after a run byte for byte."""
import os


def file_tree(folder) -> dict[str, bytes]:
    """{path relative to folder: bytes} of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out
