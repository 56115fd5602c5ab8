#!/usr/bin/env node
'use strict';
/**
 * Puts the loadable extension into lib/ before `npm pack` (the package's
 * `prepack` script): runs `cargo build --release --lib` on the repository's
 * Cargo.toml (one directory up) and copies the cdylib, without its debug
 * info when `strip` exists (FDBVFS_STRIP=0 keeps it).
 *
 * Environment: FDBVFS_LIBRARY ships that already-built library instead;
 * FDBVFS_FEATURES passes cargo features (e.g. `fdb`); CARGO and
 * CARGO_TARGET_DIR are honoured as cargo honours them.
 */

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const pkg = path.resolve(__dirname, '..');

function fail(msg) {
  console.error(`fdbvfs build: ${msg}`);
  process.exit(1);
}

function cargoBuild() {
  if (process.env.FDBVFS_LIBRARY) {
    if (!fs.existsSync(process.env.FDBVFS_LIBRARY)) {
      fail(`FDBVFS_LIBRARY=${process.env.FDBVFS_LIBRARY}: no such file`);
    }
    return process.env.FDBVFS_LIBRARY;
  }
  const manifest = path.join(pkg, '..', 'Cargo.toml');
  if (!fs.existsSync(manifest)) {
    fail(`${manifest} not found: pack from a checkout of the repository, or set FDBVFS_LIBRARY`);
  }
  const args = ['build', '--release', '--lib', '--manifest-path', manifest,
    '--message-format=json-render-diagnostics'];
  if (process.env.FDBVFS_FEATURES) args.push('--features', process.env.FDBVFS_FEATURES);
  const cargo = process.env.CARGO || 'cargo';
  console.error(`running ${cargo} ${args.join(' ')}`);
  const out = spawnSync(cargo, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  if (out.error) fail(`cannot run ${cargo}: ${out.error.message}`);
  if (out.status !== 0) fail(`cargo build failed with exit code ${out.status}`);
  for (const line of out.stdout.split('\n')) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    const kinds = (msg.target && msg.target.crate_types) || [];
    if (msg.reason === 'compiler-artifact' && kinds.includes('cdylib')) {
      const lib = msg.filenames.find((f) => /\.(so|dylib|dll)$/.test(f));
      if (lib) return lib;
    }
  }
  return fail('cargo build reported no cdylib for fdbvfs');
}

const lib = cargoBuild();
const dest = path.join(pkg, 'lib', 'libfdbvfs' + path.extname(lib));
fs.mkdirSync(path.dirname(dest), { recursive: true });
fs.copyFileSync(lib, dest);
fs.chmodSync(dest, 0o755);
if (process.env.FDBVFS_STRIP !== '0') {
  // Best effort: without strip the library only stays larger.
  spawnSync('strip', ['-S', dest], { stdio: 'inherit' });
}
console.error(`fdbvfs build: ${dest}`);
