'use strict';
/**
 * fdbvfs for Node: SQLite databases kept in FoundationDB, opened by name.
 *
 * The package carries the fdbvfs loadable extension (lib/libfdbvfs.so),
 * which registers the SQLite VFS `fdb`. better-sqlite3 opens plain file
 * names (its SQLite is built without URI file names), so `load(db,
 * { default: true })` makes `fdb` the default VFS of the process: then
 * `new Database('orders')` opens the database named `orders` in the store.
 */

const fs = require('fs');
const path = require('path');

/** The name of the SQLite VFS the extension registers. */
const VFS_NAME = 'fdb';

/**
 * The path of the loadable extension shipped in this package, for any
 * SQLite host (`db.loadExtension(path)`, the sqlite3 shell's `.load`).
 * `FDBVFS_LIBRARY`, when set, names another build of the library.
 * @returns {string}
 */
function getLoadablePath() {
  const override = process.env.FDBVFS_LIBRARY;
  if (override) return override;
  for (const suffix of ['.so', '.dylib', '.dll']) {
    const lib = path.join(__dirname, 'lib', 'libfdbvfs' + suffix);
    if (fs.existsSync(lib)) return lib;
  }
  throw new Error(
    `the fdbvfs library is missing from ${path.join(__dirname, 'lib')}: ` +
      'install a packed fdbvfs (npm pack runs cargo), or set FDBVFS_LIBRARY ' +
      'to a built libfdbvfs.so'
  );
}

/**
 * Loads the extension into `db`'s SQLite (a better-sqlite3 Database, or any
 * object with `loadExtension(path)`); the `fdb` VFS then stays registered
 * for the life of the process.
 *
 * @param {{ loadExtension(path: string): unknown }} db
 * @param {{ default?: boolean, dir?: string }} [options]
 *   `default`: make `fdb` the default VFS, so databases opened afterwards
 *   by file name are fdbvfs databases of that name (every one in this
 *   process, except `:memory:`).
 *   `dir`: the embedded store's directory, set as `process.env.FDBVFS_DIR`
 *   (read when a database is opened; default `./fdbvfs-data`).
 */
function load(db, options = {}) {
  if (!db || typeof db.loadExtension !== 'function') {
    throw new TypeError('fdbvfs.load(db): db must have loadExtension() (a better-sqlite3 Database)');
  }
  if (options.dir !== undefined) process.env.FDBVFS_DIR = String(options.dir);
  // The extension reads FDBVFS_DEFAULT once, while it loads.
  const before = process.env.FDBVFS_DEFAULT;
  if (options.default) process.env.FDBVFS_DEFAULT = '1';
  try {
    db.loadExtension(getLoadablePath());
  } finally {
    if (before === undefined) delete process.env.FDBVFS_DEFAULT;
    else process.env.FDBVFS_DEFAULT = before;
  }
}

module.exports = { VFS_NAME, getLoadablePath, load };
