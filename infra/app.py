"""The CDK app: `cd infra && python app.py [-c env=production] [-c imageTag=SHA]`, or the CDK CLI via cdk.json.

Writes the templates to infra/cdk.out (or wherever the CLI says). The stacks are in `infra.build`.
"""

import sys
from pathlib import Path

# Run as a script, sys.path[0] is infra/ itself; the stacks import as the `infra` package, from its parent.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from infra.build import main  # noqa: E402  (needs the path set above)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
