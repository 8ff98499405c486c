//! Table-driven tests of the shard's steps: inputs in, writes out, no threads.
