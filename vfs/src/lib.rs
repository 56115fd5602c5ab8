//! The SQLite VFS (skeleton until its own issue).
