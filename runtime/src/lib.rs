//! Model inspection; runtimes come later.
