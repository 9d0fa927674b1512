"""Generated protobuf/gRPC code for curacache.v1 (see scripts/gen_proto.py)."""
