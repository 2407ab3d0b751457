"""robot-emotion keys DIR: CURVE key pairs for a node published beyond loopback.

Writes DIR/server.key (public: give it to controllers), DIR/server.key_secret (the node's),
DIR/<client>.key + .key_secret (a controller's pair) and DIR/authorized_clients/<client>.key
(the public keys the node admits), then prints the config lines that use them.
"""

from __future__ import annotations

import json

from robot_emotion.bus.security import create_keys


def run_keys(args) -> int:
    paths = {k: p.resolve() for k, p in create_keys(args.folder, args.client).items()}

    def q(p) -> str:  # a TOML basic string (JSON escaping is compatible)
        return json.dumps(str(p))

    print(f"""# keys written to {paths['authorized'].parent} (secret files readable by you only)
# node: put these lines in the launch profile or calibration file
[publish]
endpoint = "tcp://0.0.0.0:5556"
server_secret_key = {q(paths['server_secret'])}
authorized_keys = {q(paths['authorized'])}
# controller: copy server.key and {args.client}.key_secret to it, then
#   robot-emotion monitor --endpoint tcp://ROBOT:5556 --server-key {paths['server_public']} --client-key {paths['client_secret']}
#   Subscriber("tcp://ROBOT:5556", server_key={q(paths['server_public'])}, client_key={q(paths['client_secret'])})
# another controller: robot-emotion keys {args.folder} --client NAME (then restart the node)""")
    return 0
