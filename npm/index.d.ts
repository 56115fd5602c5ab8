/** The name of the SQLite VFS the extension registers. */
export declare const VFS_NAME: 'fdb';

/**
 * The path of the loadable extension shipped in this package
 * (`FDBVFS_LIBRARY` overrides it).
 */
export declare function getLoadablePath(): string;

export interface LoadOptions {
  /** Make `fdb` the default VFS: `new Database(name)` then opens database `name`. */
  default?: boolean;
  /** The embedded store's directory (sets `process.env.FDBVFS_DIR`). */
  dir?: string;
}

/** Loads the extension into `db` (a better-sqlite3 Database) and registers the `fdb` VFS. */
export declare function load(db: { loadExtension(path: string): unknown }, options?: LoadOptions): void;
