import sys

from bench.run import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    print("bench: interrupted; everything it started has been stopped", file=sys.stderr)
    sys.exit(130)
