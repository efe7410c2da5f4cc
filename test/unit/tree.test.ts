// The tree as committed: no merge left its conflict markers in a file.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const root = join(import.meta.dirname, '..', '..');

describe('the source tree', () => {
  it('holds no merge conflict markers', () => {
    const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' })
      .split('\0')
      .filter((f) => f !== '' && !f.endsWith('.png'));
    const found: string[] = [];
    for (const f of files) {
      let text: string;
      try {
        text = readFileSync(join(root, f), 'utf8');
      } catch {
        continue; // listed but not checked out (a deleted file not yet committed)
      }
      text.split('\n').forEach((line, i) => {
        if (/^(<{7}|>{7}) |^={7}$/.test(line)) found.push(`${f}:${i + 1}: ${line.slice(0, 40)}`);
      });
    }
    assert.deepEqual(found, []);
  });
});
