#!/usr/bin/env python3
"""A bounded live-frames flood for benches/xdp_cost/run.sh: the pps
harness's 60-byte inner frame (benches/src/bin/pps/frames.rs, flow 0) sent
out of IFNAME with XDP_TX by the pinned generator program PROG (pb_gen of
benches/pps/bpf/gen.bpf.c) through BPF_PROG_RUN in live-frames mode, in
calls of REPEAT frames, until SECONDS pass (and never more than 20 Mpps).

    gen.py PROG_PIN IFNAME SECONDS      prints: sent N seconds S
"""
import ctypes, os, struct, sys, time

BPF_OBJ_GET, BPF_PROG_TEST_RUN, SYS_BPF = 7, 10, 321
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
REPEAT, BATCH = 65536, 256

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame():
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0x4000, 64, 17, 0,
                               bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    f = bytes([2, 0, 0, 0xAA, 0x0C, 2, 2, 0, 0, 0xAA, 0x0C, 1, 8, 0]) + bytes(ip)
    f += struct.pack("!HHHH", 20000, 80, 26, 0)
    return f + b"\x61" * (60 - len(f))


def main():
    pin, ifname, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    path = ctypes.create_string_buffer(pin.encode())
    fd = bpf(BPF_OBJ_GET, struct.pack("QII", ctypes.addressof(path), 0, 0))
    ifindex = int(open("/sys/class/net/%s/ifindex" % ifname).read())
    data = ctypes.create_string_buffer(frame(), 60)
    ctx = ctypes.create_string_buffer(struct.pack("6I", 0, 60, 0, ifindex, 0, 0), 24)
    attr = struct.pack("IIIIQQIIIIQQIII4x", fd, 0, 60, 0, ctypes.addressof(data), 0, REPEAT, 0,
                       24, 0, ctypes.addressof(ctx), 0, BPF_F_TEST_XDP_LIVE_FRAMES, 0, BATCH)
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < secs and n < secs * 20e6:
        bpf(BPF_PROG_TEST_RUN, attr)
        n += REPEAT
    print("sent %d seconds %.3f" % (n, time.monotonic() - t0))


main()
