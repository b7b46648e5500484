// Builds the static client into dist/: app.js (+ map), style.css, index.html; the operator console admin.html, admin.js, admin.css.
// Usage: npm run build
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const root = new URL('./', import.meta.url);
const dist = new URL('dist/', root);

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const common = { bundle: true, minify: true, sourcemap: 'linked', logLevel: 'warning', legalComments: 'linked' };
await esbuild.build({
  ...common,
  entryPoints: [new URL('src/main.js', root).pathname],
  outfile: new URL('app.js', dist).pathname,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
});
await esbuild.build({
  ...common,
  entryPoints: [new URL('src/admin.js', root).pathname],
  outfile: new URL('admin.js', dist).pathname,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
});
await esbuild.build({
  ...common,
  entryPoints: [new URL('src/style.css', root).pathname],
  outfile: new URL('style.css', dist).pathname,
  target: ['chrome100', 'firefox100', 'safari15'],
});

// Cache-busting: reference the assets with a content hash. admin.html: the operator console
// (admin.css: the chart library's styles, imported by src/admin-charts.js).
for (const [page, assets] of [['index.html', ['app.js', 'style.css']], ['admin.html', ['admin.js', 'admin.css', 'style.css']]]) {
  let out = await readFile(new URL(page, root), 'utf8');
  for (const asset of assets) {
    const body = await readFile(new URL(asset, dist));
    const hash = createHash('sha256').update(body).digest('hex').slice(0, 10);
    out = out.replace(`"${asset}"`, `"${asset}?v=${hash}"`);
    console.log(`dist/${asset}: ${body.length} bytes, ${gzipSync(body).length} gzipped`);
  }
  await writeFile(new URL(page, dist), out);
  console.log(`dist/${page} written`);
}
