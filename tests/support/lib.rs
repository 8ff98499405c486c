//! Helpers shared by the integration tests and examples of the workspace: a side-effect
//! log that activities append to, and a way to run a test body in a child process that a
//! test can kill with SIGKILL.
