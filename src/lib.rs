//! fdbvfs: SQLite on FoundationDB.
