"""Start localstripe with its store file in the run's folder.

localstripe rewrites its whole store to `/tmp/localstripe.pickle` after every write (no fsync);
the path is fixed in its source, so two runs on one machine would share it. This launcher points
it at `--store` and otherwise runs localstripe unchanged: `python peer_localstripe.py --port P
--store DIR/localstripe.pickle`.
"""

from __future__ import annotations

import pickle
import sys

from localstripe import resources, server


def main() -> None:
    args = sys.argv[1:]
    i = args.index("--store")
    path = args[i + 1]
    del args[i : i + 2]

    def dump_to_disk(self: resources.Store) -> None:
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.dump_to_disk = dump_to_disk
    sys.argv = [sys.argv[0], *args, "--from-scratch"]
    server.start()


if __name__ == "__main__":
    main()
