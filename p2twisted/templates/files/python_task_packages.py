"""
p2 'python' task: list the packages of the pod's virtualenv: name, version,
install time, source (requirements, task install, or dependency).
"""

import os
import re
import sys
import time
from importlib import metadata


def names(path):
    found = set()
    try:
        with open(path) as f:
            for line in f:
                match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
                if match and not line.lstrip().startswith(("#", "-")):
                    found.add(normalize(match.group(1)))
    except OSError:
        pass
    return found


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def main():
    required = names(os.path.join(os.environ["LAUNCHABLE_ROOT"], "requirements.txt"))
    tasked = names(os.path.join(os.environ["POD_HOME"], "p2-task-installed.txt"))
    rows = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = normalize(name)
        source = ("task install" if key in tasked else
                  "requirements" if key in required else "dependency")
        path = getattr(dist, "_path", None)
        stamp = os.path.getmtime(str(path)) if path else 0
        installed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        rows.append((name, dist.version, installed, source))
    rows.sort(key=lambda r: r[0].lower())
    width = max([len(r[0]) for r in rows] + [7])
    sys.stdout.write("%-*s  %-12s  %-19s  %s\n" % (width, "PACKAGE", "VERSION", "INSTALLED",
                                                   "SOURCE"))
    for row in rows:
        sys.stdout.write("%-*s  %-12s  %-19s  %s\n" % ((width,) + row))


if __name__ == "__main__":
    main()
