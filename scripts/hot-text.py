#!/usr/bin/env python3
"""Lists the functions a cloudlet server runs once it serves, for `cmd/cloudlet/hot-text.order`.

Run by scripts/hot-text.sh (read it first). In a temp dir of its own, this starts the server
(`--listen 127.0.0.1:0`, its own cgroup subtree), waits until it has trimmed its start-up memory,
then puts a one-shot breakpoint (int3) on the entry of every function of its program, through
ptrace, on every thread. While the breakpoints are in, a driver process does what a server does
at steady state: applies 30 services, kills them 60 times (50 ms apart), asks for services,
nodes, a service's description, events and logs and restarts one, as an operator would, and
leaves it idle for a while. Each breakpoint hit is recorded, its original byte put back and the
thread resumed: each function costs one trap, once. At the end the original text is written
back, every thread detached, the server stopped and everything it started killed and removed.

Why breakpoints and not the pages the server has resident: a touched page says only that one of
its ~8 functions ran. At idle the server touched 1,203 pages (4.7 MiB) but ran 819 functions
(229 KiB): packing those functions is what shrinks its resident text.

It only ever traces the server it started, writes only under its temp dir, the cgroup subtree
named after it, and OUT.
"""

import argparse
import bisect
import ctypes
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_DETACH = 7, 12, 13, 17
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_EVENT_STOP = 0x4206, 0x4207, 128
# Follow threads and the children the server forks or vforks (they run its patched text until
# they exec), and learn of their exec, after which they are let go.
PTRACE_OPTIONS = 0x02 | 0x04 | 0x08 | 0x10  # TRACEFORK | TRACEVFORK | TRACECLONE | TRACEEXEC
PTRACE_EVENT_EXEC = 4
WALL = 0x40000000
RIP, RSP = 16, 19  # indexes of rip and rsp in struct user_regs_struct (x86_64)
STACK_SCAN = 1 << 20  # how much of a thread's stack is scanned for return addresses
SERVICES, KILLS, SPACING, IDLE = 30, 60, 0.05, 10.0


def say(*args):
    print("hot-text:", *args, file=sys.stderr, flush=True)


def ptrace(request, tid, addr=0, data=0):
    if libc.ptrace(request, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def functions(map_file):
    """(address, name) of every function in .text, from lld's link map (`--no-demangle`).

    lld's map lists each output section (`VMA LMA Size Align .text`), each input section in it
    (`... file:(.text.NAME)`) and, below that, the symbols the input section defines
    (`VMA LMA Size Align NAME`).
    """
    found, in_text = {}, False
    with open(map_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(None, 4)
            if len(fields) != 5 or not re.fullmatch(r"[0-9a-f]+", fields[0]):
                continue
            name = fields[4].strip()
            if ":(" in name:
                in_text = name.split(":(", 1)[1].startswith(".text")
            elif name.startswith("."):
                in_text = False
            elif in_text and int(fields[2], 16) > 0:
                found.setdefault(int(fields[0], 16), name)
    return found


def text_range(pid, exe):
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == exe and fields[1] == "r-xp":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                return start, end
    raise SystemExit(f"pid {pid} maps no text of {exe}")


class Program:
    """A traced program: its text as on disk, its breakpoints, the functions that ran."""

    def __init__(self, pid, exe, entries):
        self.start, self.end = text_range(pid, exe)
        self.entries = {a for a in entries if self.start <= a < self.end}
        self.original = read_mem(pid, self.start, self.end - self.start)
        patched = bytearray(self.original)
        for a in self.entries:
            patched[a - self.start] = 0xCC
        self.patched = bytes(patched)
        self.hit = set()

    def patch(self, pid):
        write_mem(pid, self.patched, self.start)

    def restore(self, pid):
        write_mem(pid, self.original, self.start)

    def put_back(self, tid, address):
        write_mem(tid, self.original[address - self.start : address - self.start + 1], address)


def running(tid, program):
    """The functions a stopped thread is in: its instruction pointer and every word of its stack
    that points into the program's text (a conservative scan: no frame pointers to walk). Their
    entries ran before the breakpoints went in, yet they run on: a thread's main loop, the
    runtime's `block_on` inlined into `main`."""
    regs = ctypes.create_string_buffer(27 * 8)
    ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    rip = struct.unpack_from("<Q", regs, RIP * 8)[0]
    rsp = struct.unpack_from("<Q", regs, RSP * 8)[0]
    top = rsp
    with open(f"/proc/{tid}/maps") as f:
        for line in f:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= rsp < high:
                top = min(high, rsp + STACK_SCAN)
    stack = read_mem(tid, rsp, top - rsp) if top > rsp else b""
    words = [rip] + [w for (w,) in struct.iter_unpack("<Q", stack[: len(stack) // 8 * 8])]
    entries = sorted(program.entries)
    found = set()
    for w in words:
        if program.start <= w < program.end:
            i = bisect.bisect_right(entries, w) - 1
            if i >= 0:
                found.add(entries[i])
    return found


def read_mem(pid, address, size):
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        return os.pread(fd, size, address)
    finally:
        os.close(fd)


def write_mem(pid, data, address):
    fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    try:
        os.pwrite(fd, data, address)
    finally:
        os.close(fd)


def exe_of(tid):
    try:
        return os.readlink(f"/proc/{tid}/exe")
    except OSError:
        return None


def trace(pid, server_entries, shim_entries, driver):
    """Breakpoints in every thread of `pid` (and in every shim it starts, from its exec) until the
    `driver` process exits. Returns the server's and the shims' functions that ran."""
    threads = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    for t in threads:
        ptrace(PTRACE_SEIZE, t, 0, PTRACE_OPTIONS)
    for t in threads:
        ptrace(PTRACE_INTERRUPT, t)
    waiting = set(threads)
    while waiting:
        t, _ = os.waitpid(-1, WALL)
        waiting.discard(t)
    server = Program(pid, exe_of(pid), server_entries)
    programs = {exe_of(pid): server}
    for t in threads:
        server.hit |= running(t, server)
    server.patch(pid)
    say(f"{len(server.entries)} breakpoints in the server, {len(threads)} threads")
    shim = None
    regs = ctypes.create_string_buffer(27 * 8)

    def step_back(t):
        """A thread stopped on a breakpoint: put its byte back (in its own memory: a forked child
        has a copy of its own), rewind, record it."""
        program = programs.get(exe_of(t))
        ptrace(PTRACE_GETREGS, t, 0, ctypes.addressof(regs))
        address = struct.unpack_from("<Q", regs, RIP * 8)[0] - 1
        if program is None or address not in program.entries:
            return False
        program.hit.add(address)
        program.put_back(t, address)
        struct.pack_into("<Q", regs, RIP * 8, address)
        ptrace(PTRACE_SETREGS, t, 0, ctypes.addressof(regs))
        return True

    for t in threads:
        ptrace(PTRACE_CONT, t)
    stopping, waiting = False, set()
    while True:
        t, status = os.waitpid(-1, WALL)
        if t == driver:
            # The driver is done: stop every thread to take the breakpoints out.
            stopping, waiting = True, set(threads)
            for th in list(threads):
                try:
                    ptrace(PTRACE_INTERRUPT, th)
                except OSError:
                    threads.discard(th)
                    waiting.discard(th)
            if not waiting:
                break
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            threads.discard(t)
            waiting.discard(t)
            if stopping and not waiting:
                break
            continue
        if not os.WIFSTOPPED(status):
            continue
        threads.add(t)
        sig, event = os.WSTOPSIG(status), status >> 16
        if sig == signal.SIGTRAP and event == 0:
            inject = 0 if step_back(t) else sig
        elif event == PTRACE_EVENT_EXEC:
            exe = exe_of(t) or ""
            if shim_entries and os.path.basename(exe).startswith("cloudlet-shim-"):
                # A shim: traced from its first instruction, as long as it lives.
                if shim is None:
                    shim = programs[exe] = Program(t, exe, shim_entries)
                    say(f"{len(shim.entries)} breakpoints in each shim")
                shim.patch(t)
                inject = 0
            else:
                # A service: not ours to trace.
                threads.discard(t)
                waiting.discard(t)
                ptrace(PTRACE_DETACH, t)
                continue
        elif event != 0:
            if stopping and event == PTRACE_EVENT_STOP:
                waiting.discard(t)
                if not waiting:
                    break
                continue
            inject = 0
        else:
            inject = sig
        ptrace(PTRACE_CONT, t, 0, inject)
    for t in threads:
        program = programs.get(exe_of(t))
        try:
            if program is not None:
                program.restore(t)
            ptrace(PTRACE_DETACH, t)
        except OSError as e:
            say(f"detaching {t}: {e}")
    return server.hit, (shim.hit if shim else set())


def ctl(cloudlet, data, *args):
    return subprocess.run(
        [cloudlet, "ctl", "--data-dir", data, *args], capture_output=True, text=True, check=True
    ).stdout


def drive(cloudlet, workload, work):
    """What the server does at steady state, run in a child process while it is traced."""
    data = os.path.join(work, "data")
    command = json.dumps([workload, "sleep"])
    manifest = os.path.join(work, "services.yaml")
    with open(manifest, "w") as f:
        f.write(
            "---\n".join(
                f"apiVersion: cloudlet/v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n"
                f"  command: {command}\n  restart: {{policy: always, backoff: {{initial: 100ms, "
                "max: 1s}, resetAfter: 1s}\n"
                for i in range(SERVICES)
            )
        )
    ctl(cloudlet, data, "apply", "-f", manifest)
    time.sleep(2)
    kills = 0
    while kills < KILLS:
        for service in json.loads(ctl(cloudlet, data, "get", "services", "-o", "json")):
            if kills < KILLS and service.get("pid"):
                os.kill(service["pid"], signal.SIGKILL)
                kills += 1
                time.sleep(SPACING)
        time.sleep(1.5)
    for args in (["get", "services"], ["get", "nodes"], ["describe", "service", "s0"], ["events"],
                 ["logs", "s0"], ["restart", "s1"]):
        ctl(cloudlet, data, *args)
    time.sleep(IDLE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cloudlet", required=True, help="the release cloudlet binary")
    parser.add_argument("--map", required=True, help="its link map (OUT_DIR/cloudlet.map)")
    parser.add_argument("--workload", required=True, help="the bench's workload binary")
    parser.add_argument("--out", required=True, help="the server's symbol order to write")
    parser.add_argument("--shim-map", help="the shim's link map (target/shim/.../cloudlet-shim.map)")
    parser.add_argument("--shim-out", help="the shim's symbol order to write")
    args = parser.parse_args()
    names = functions(args.map)
    say(f"{len(names)} functions in {args.map}")
    shim_names = functions(args.shim_map) if args.shim_map else {}
    work = tempfile.mkdtemp(prefix="cl-hot-text-")
    cgroup = "/" + os.path.basename(work)
    data = os.path.join(work, "data")
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.cloudlet, "server", "--data-dir", data, "--node-name", "hot", "--log", "info",
         "--listen", "127.0.0.1:0", "--cgroup-root", cgroup],
        stdout=log, stderr=log, cwd=work,
    )
    try:
        deadline = time.monotonic() + 30
        while "gave back start-up memory" not in open(log.name).read():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {log.name}")
            time.sleep(0.05)
        driver = os.fork()
        if driver == 0:
            try:
                drive(args.cloudlet, args.workload, work)
                os._exit(0)
            except Exception as e:  # noqa: BLE001 - the child reports and exits
                print(f"hot-text: driver: {e}", file=sys.stderr)
                os._exit(1)
        hit, shim_hit = trace(server.pid, names.keys(), shim_names.keys(), driver)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        sweep(work, cgroup)
    write_order(names, hit, args.out, "server")
    if args.shim_out:
        write_order(shim_names, shim_hit, args.shim_out, "shim")


def write_order(names, hit, out, what):
    size = dict(sizes(names))
    say(f"{what}: {len(hit)} functions ran, {sum(size.get(a, 0) for a in hit) // 1024} KiB")
    with open(out, "w") as f:
        for address in sorted(hit):
            f.write(names[address] + "\n")


def sizes(names):
    ordered = sorted(names)
    return ((a, b - a) for a, b in zip(ordered, ordered[1:]))


def sweep(work, cgroup):
    """Kills what the run left (its shims by their command line, its services by their cgroup),
    removes the cgroup subtree and the temp dir."""
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and work.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                os.kill(int(p), signal.SIGKILL)
        except OSError:
            pass
    root = None
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if "cgroup2" in fields[fields.index("-") + 1 :][:1]:
            root = fields[4]
            break
    if root:
        tree = root + cgroup
        for _ in range(50):
            pids = []
            for dirpath, _, files in os.walk(tree):
                if "cgroup.procs" in files:
                    pids += [int(p) for p in open(os.path.join(dirpath, "cgroup.procs")).read().split()]
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for dirpath, _, _ in sorted(os.walk(tree), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
