/**
 * The page's static files: built by `npm run build` (esbuild bundles adapters/ui/web into
 * dist/adapters/ui/web), read into memory once with a gzip copy, and served with an ETag.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { ErrorCode, JetstateError } from '../../engine/index.js';
import { SECURITY_HEADERS } from './http.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

interface Asset {
  body: Buffer;
  gzip: Buffer | null;
  type: string;
  etag: string;
}

/** Where the built page is: beside this module when running from dist/, else dist/ of the package. */
export function findAssetsDir(): string {
  const candidates = [new URL('./web/', import.meta.url), new URL('../../dist/adapters/ui/web/', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((d) => existsSync(join(d, 'index.html')) && existsSync(join(d, 'app.js')));
  if (!found) {
    throw new JetstateError(ErrorCode.InvalidOptions, `the web view's files are not built (looked in ${candidates.join(' and ')}); run 'npm run build'`);
  }
  return found;
}

export class Assets {
  private constructor(private readonly files: Map<string, Asset>) {}

  static async load(dir: string): Promise<Assets> {
    const files = new Map<string, Asset>();
    for (const name of await readdir(dir)) {
      const type = TYPES[extname(name)];
      if (!type) continue;
      const body = await readFile(join(dir, name));
      const compressible = !type.startsWith('image/png');
      files.set(`/${name}`, {
        body,
        gzip: compressible ? gzipSync(body) : null,
        type,
        etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 20)}"`,
      });
    }
    return new Assets(files);
  }

  /** Serves `/` (index.html) or `/<file>`; false when there is no such file. */
  serve(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const asset = this.files.get(path === '/' ? '/index.html' : path);
    if (!asset) return false;
    const headers: Record<string, string> = {
      ...SECURITY_HEADERS,
      'content-type': asset.type,
      etag: asset.etag,
      'cache-control': 'no-cache',
      vary: 'accept-encoding',
    };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers).end();
      return true;
    }
    const gzip = asset.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const body = gzip ? asset.gzip! : asset.body;
    res.writeHead(200, { ...headers, ...(gzip ? { 'content-encoding': 'gzip' } : {}), 'content-length': String(body.length) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }
}
