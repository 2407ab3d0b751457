"""The wire: message schema, ZeroMQ publisher and client, control socket, CURVE keys, ROS 2 out.

Nothing here knows how a result is computed; the node hands it message bodies."""
