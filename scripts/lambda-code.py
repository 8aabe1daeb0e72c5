"""Each function's code as Lambda gets it: BUILD_DIR/<LogicalId>/ (the `sam build` output) is
zipped as `sam deploy` zips a function's code for upload (aws-sam-cli's own
make_zip_with_lambda_permissions), and the zip is extracted into OUT_DIR/<LogicalId>/ as Lambda
unpacks it into /var/task: each file with the permission bits the zip records, then nothing in
it writable (the function's code is read-only in Lambda).

Prints one line per function: its logical id, the zip's size in bytes, and its files.

Usage: lambda-code.py BUILD_DIR OUT_DIR
"""

import os
import stat
import sys
import tempfile
import zipfile

from samcli.lib.package.utils import make_zip_with_lambda_permissions


def extract(archive: str, dest: str) -> list:
    """Extracts `archive` into `dest`, file modes from the zip; returns the file names."""
    names = []
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            path = os.path.realpath(os.path.join(dest, info.filename))
            if not path.startswith(os.path.realpath(dest) + os.sep):
                sys.exit(f"lambda-code: {archive}: {info.filename} is outside the code")
            if info.is_dir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(info) as src, open(path, "wb") as out:
                out.write(src.read())
            mode = (info.external_attr >> 16) & 0o7777 if info.create_system == 3 else 0o644
            # Read-only, as in /var/task: the recorded permissions without any write bit.
            os.chmod(path, mode & ~0o222)
            names.append(info.filename)
    for root, dirs, _ in os.walk(dest, topdown=False):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)
    os.chmod(dest, 0o555)
    return sorted(names)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    found = False
    with tempfile.TemporaryDirectory() as scratch:
        for name in sorted(os.listdir(build)):
            source = os.path.join(build, name)
            if not os.path.isdir(source):
                continue
            archive = make_zip_with_lambda_permissions(os.path.join(scratch, name), source)
            dest = os.path.join(out, name)
            os.makedirs(dest)
            files = extract(archive, dest)
            found = True
            print(name, os.path.getsize(archive), " ".join(files))
    if not found:
        sys.exit(f"lambda-code: no function code in {build} (run scripts/build-functions)")


if __name__ == "__main__":
    main()
