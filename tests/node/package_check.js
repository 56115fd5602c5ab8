'use strict';
/**
 * The packed `fdbvfs` npm package with better-sqlite3, as a Node developer
 * uses it (run by tests/packaging.rs with NODE_PATH at a project where both
 * are installed).
 *
 *   node package_check.js write DIR NAME N   // create NAME, insert N rows
 *   node package_check.js read  DIR NAME N   // expect N rows, add one
 *
 * Prints one `ok …` line; any failure throws (non-zero exit).
 */

const assert = require('assert');
const path = require('path');
const Database = require('better-sqlite3');
const fdbvfs = require('fdbvfs');

const [mode, dir, name, nText] = process.argv.slice(2);
const n = Number(nText);

// The library comes from the installed package, not from the repository.
const lib = fdbvfs.getLoadablePath();
assert.ok(lib.includes(path.join('node_modules', 'fdbvfs', 'lib')), lib);
assert.throws(() => fdbvfs.load({}), TypeError);

const boot = new Database(':memory:');
fdbvfs.load(boot, { default: true, dir });
boot.close();
assert.strictEqual(process.env.FDBVFS_DEFAULT, undefined);

const db = new Database(name);
const [main] = db.pragma('database_list');
assert.ok(main.file.startsWith('fdb:') && main.file.endsWith(`:${name}`), main.file);

if (mode === 'write') {
  db.exec('CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)');
  const insert = db.prepare('INSERT INTO orders VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 1; i <= n; i++) insert.run(i, `item-${i}`, i % 7);
  })();
  const version = Number(db.pragma('fdb_version', { simple: true }));
  assert.ok(version > 0, String(version));
} else if (mode === 'read') {
  const row = db.prepare('SELECT count(*) AS c, sum(qty) AS s FROM orders').get();
  let sum = 0;
  for (let i = 1; i <= n; i++) sum += i % 7;
  assert.deepStrictEqual(row, { c: n, s: sum });
  assert.strictEqual(db.prepare('SELECT item FROM orders WHERE id = ?').pluck().get(n), `item-${n}`);
  db.prepare("INSERT INTO orders VALUES (?, 'late', 0)").run(n + 1);
  db.close();
  const again = new Database(name);
  assert.strictEqual(again.prepare('SELECT count(*) FROM orders').pluck().get(), n + 1);
  again.close();
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(`ok ${mode} ${n} via better-sqlite3`);
