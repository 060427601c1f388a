// Runs the pure firmware modules' tests under real MicroPython (WebAssembly port) in Node.
//
// Usage: node mp_run.mjs <firmware dir> <test module>...
// The modules and tests are copied flat into the MicroPython filesystem, as on a board, and
// every test_* function of each test module is called; exit code 1 if any fails.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const [fwDir, ...modules] = process.argv.slice(2);
if (!fwDir || modules.length === 0) {
  console.error("usage: node mp_run.mjs <firmware dir> <test module>...");
  process.exit(2);
}

let out = "";
const mp = await loadMicroPython({
  stdout: (line) => {
    out += line + "\n";
    process.stdout.write(line + "\n");
  },
  stderr: (line) => process.stderr.write(line + "\n"),
  heapsize: 64 * 1024 * 1024,
});

mp.FS.mkdir("/fw");
const copy = (src, name) => mp.FS.writeFile("/fw/" + name, readFileSync(src));
for (const f of readdirSync(fwDir)) {
  if (f.endsWith(".py")) copy(join(fwDir, f), f);
}
for (const f of readdirSync(join(fwDir, "tests"))) {
  if (f.endsWith(".py")) copy(join(fwDir, "tests", f), f);
}

const runner = `
import sys, os
sys.path.insert(0, "/fw")
os.chdir("/fw")
print("MicroPython", sys.version, sys.implementation.name)
_passed = 0
_failed = []
for _name in ${JSON.stringify(modules)}:
    _mod = __import__(_name)
    for _t in sorted(dir(_mod)):
        if not _t.startswith("test_"):
            continue
        _fn = getattr(_mod, _t)
        try:
            _fn()
            _passed += 1
        except Exception as _e:
            _failed.append(_name + "." + _t)
            print("FAIL", _name + "." + _t)
            sys.print_exception(_e)
print("MP-RESULT passed=%d failed=%d" % (_passed, len(_failed)))
`;
try {
  await mp.runPythonAsync(runner);
} catch (e) {
  console.error("MicroPython runner crashed:", e);
  process.exit(1);
}
const m = out.match(/MP-RESULT passed=(\d+) failed=(\d+)/);
if (!m || Number(m[2]) !== 0 || Number(m[1]) === 0) process.exit(1);
