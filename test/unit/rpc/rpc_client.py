#!/usr/bin/python3
"""Test client for test_rpc.c: drives node/rpc.c with grpcio (an independent gRPC
stack) and with raw sockets. One output line per operation, so the C test can
assert on exact results.

usage: rpc_client.py --target HOST:PORT --ca CA [--cert C --key K] OP...

Operations:
  random:N             GetRandomBytes(count=N), checks the test pattern
  whoami               BackupKey; the test handler answers with the principal
  getkey:NAME:MS[:T]   GetKey answered after MS ms by a timer; T = timeout seconds
  fail:NAME            DeleteKey; prints the status and the hex of the message
  call:PATH            an empty request to PATH
  pad:N                GetRandomBytes(count=4) plus an unknown field of N bytes
  amplify:N            GetRandomBytes(count=4) plus N empty unknown fields (2 bytes each,
                       dozens of bytes each once decoded by protobuf-c)
  health:SVC           grpc.health.v1.Health/Check ("-" = "")
  watch                grpc.health.v1.Health/Watch (server streaming)
  many:N:CH:PAR        N calls (random and async getkey) over CH channels, PAR in flight
  newchan              drop the channel; the next call connects again
  abandon:MS           start a GetKey answered after MS ms, wait until the server has
                       it, then exit without waiting for the answer
  garbage              raw TCP: send non-TLS bytes, expect the server to close
  rawtls:ALPN          TLS with the client cert offering ALPN (none|h2|http/1.1);
                       OPEN if the server speaks HTTP/2 afterwards, CLOSED otherwise
"""
import argparse
import os
import socket
import ssl
import sys
import time

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, b):
    return varint((num << 3) | 2) + varint(len(b)) + b


def parse(msg):
    """Returns {field: [values]} for a flat protobuf message."""
    out = {}
    i = 0
    while i < len(msg):
        key = 0
        shift = 0
        while True:
            b = msg[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        num, wt = key >> 3, key & 7
        if wt == 0:
            v = 0
            shift = 0
            while True:
                b = msg[i]
                i += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        elif wt == 2:
            ln = 0
            shift = 0
            while True:
                b = msg[i]
                i += 1
                ln |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            v = msg[i:i + ln]
            i += ln
        else:
            raise ValueError("unexpected wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def ident(b):
    return b


class Client:
    def __init__(self, args):
        self.args = args
        self.chan = None

    def creds(self):
        ca = open(self.args.ca, "rb").read()
        if self.args.cert:
            return grpc.ssl_channel_credentials(ca, open(self.args.key, "rb").read(),
                                                open(self.args.cert, "rb").read())
        return grpc.ssl_channel_credentials(ca)

    def new_channel(self):
        return grpc.secure_channel(self.args.target, self.creds(),
                                   options=[("grpc.enable_http_proxy", 0),
                                            ("grpc.enable_retries", 0)])

    def channel(self):
        if self.chan is None:
            self.chan = self.new_channel()
        return self.chan

    def unary(self, path, req, timeout=10.0, chan=None):
        fn = (chan or self.channel()).unary_unary(path, request_serializer=ident,
                                                  response_deserializer=ident)
        return fn(req, timeout=timeout)


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def run_op(cl, op):
    parts = op.split(":")
    name = parts[0]
    try:
        if name == "random":
            n = int(parts[1])
            resp = cl.unary("/mhsm.v1.Keys/GetRandomBytes", field_varint(1, n))
            val = parse(resp).get(1, [b""])[0]
            return "random OK %d" % n if val == pattern(n) else "random BADVALUE"
        if name == "whoami":
            resp = cl.unary("/mhsm.v1.Keys/BackupKey", field_bytes(1, b"x"))
            return "whoami OK " + parse(resp)[1][0].decode()
        if name == "getkey":
            timeout = float(parts[3]) if len(parts) > 3 else 10.0
            req = field_bytes(1, parts[1].encode()) + field_bytes(2, parts[2].encode())
            resp = cl.unary("/mhsm.v1.Keys/GetKey", req, timeout=timeout)
            key = parse(parse(resp)[1][0])
            return "getkey OK " + key[1][0].decode()
        if name == "fail":
            cl.unary("/mhsm.v1.Keys/DeleteKey", field_bytes(1, parts[1].encode()))
            return "fail OK"
        if name == "call":
            cl.unary(parts[1], b"")
            return "call OK"
        if name == "pad":
            req = field_varint(1, 4) + field_bytes(15, b"\xa5" * int(parts[1]))
            resp = cl.unary("/mhsm.v1.Keys/GetRandomBytes", req)
            return "pad OK" if parse(resp)[1][0] == pattern(4) else "pad BADVALUE"
        if name == "amplify":
            req = field_varint(1, 4) + b"\x78\x00" * int(parts[1])
            resp = cl.unary("/mhsm.v1.Keys/GetRandomBytes", req)
            return "amplify OK" if parse(resp)[1][0] == pattern(4) else "amplify BADVALUE"
        if name == "health":
            svc = b"" if parts[1] == "-" else parts[1].encode()
            resp = cl.unary("/grpc.health.v1.Health/Check", field_bytes(1, svc) if svc else b"")
            return "health OK %d" % parse(resp).get(1, [0])[0]
        if name == "watch":
            fn = cl.channel().unary_stream("/grpc.health.v1.Health/Watch",
                                           request_serializer=ident,
                                           response_deserializer=ident)
            for _ in fn(b"", timeout=10.0):
                pass
            return "watch OK"
        if name == "many":
            return many(cl, int(parts[1]), int(parts[2]), int(parts[3]))
        if name == "newchan":
            if cl.chan is not None:
                cl.chan.close()
            cl.chan = None
            return "newchan OK"
        if name == "abandon":
            req = field_bytes(1, b"abandoned") + field_bytes(2, parts[1].encode())
            fut = cl.channel().unary_unary("/mhsm.v1.Keys/GetKey", request_serializer=ident,
                                           response_deserializer=ident).future(req, timeout=30.0)
            # Keep |fut| referenced (grpcio cancels calls it garbage-collects) and
            # wait until the server's handler has it: RotateKey answers with the
            # number of GetKey calls the test service has seen.
            for _ in range(300):
                seen = parse(parse(cl.unary("/mhsm.v1.Keys/RotateKey", b""))[1][0])[1][0]
                if int(seen) >= 1:
                    break
                time.sleep(0.05)
            print("abandon OK" if not fut.done() else "abandon DONE", flush=True)
            os._exit(0)
        if name == "garbage":
            return garbage(cl.args.target)
        if name == "rawtls":
            return rawtls(cl.args, parts[1])
        return "unknown-op"
    except grpc.RpcError as e:
        details = (e.details() or "").encode("utf-8", "surrogateescape").hex()
        return "%s ERR %s %s" % (name, e.code().name, details)


def many(cl, n, nchan, par):
    chans = [cl.new_channel() for _ in range(nchan)]
    rnd = [c.unary_unary("/mhsm.v1.Keys/GetRandomBytes", request_serializer=ident,
                         response_deserializer=ident) for c in chans]
    get = [c.unary_unary("/mhsm.v1.Keys/GetKey", request_serializer=ident,
                         response_deserializer=ident) for c in chans]
    inflight = []
    ok = 0

    def finish(item):
        kind, arg, fut = item
        resp = fut.result()
        if kind == "r":
            return parse(resp).get(1, [b""])[0] == pattern(arg)
        return parse(parse(resp)[1][0])[1][0] == arg

    try:
        for i in range(n):
            c = i % nchan
            if i % 5 == 4:
                kid = ("k%d" % i).encode()
                req = field_bytes(1, kid) + field_bytes(2, str(i % 7).encode())
                inflight.append(("g", kid, get[c].future(req, timeout=30.0)))
            else:
                cnt = 1 + i % 64
                inflight.append(("r", cnt, rnd[c].future(field_varint(1, cnt), timeout=30.0)))
            if len(inflight) >= par:
                ok += finish(inflight.pop(0))
        while inflight:
            ok += finish(inflight.pop(0))
    except grpc.RpcError as e:
        return "many ERR %s" % e.code().name
    finally:
        for c in chans:
            c.close()
    return "many OK %d" % ok


def garbage(target):
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
        while True:
            d = s.recv(4096)
            if not d:
                return "garbage CLOSED"
    except (ConnectionResetError, BrokenPipeError):
        return "garbage CLOSED"
    except socket.timeout:
        return "garbage OPEN"
    finally:
        s.close()


def rawtls(args, alpn):
    host, port = args.target.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    if alpn != "none":
        ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection((host, int(port)), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        d = s.recv(9)
        # A SETTINGS frame header (type 4) means the server speaks HTTP/2 to us.
        return "rawtls OPEN" if len(d) >= 4 and d[3] == 4 else "rawtls CLOSED"
    except (ssl.SSLError, ConnectionError, OSError):
        return "rawtls CLOSED"
    finally:
        raw.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("ops", nargs="+")
    args = ap.parse_args()
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"):
        os.environ.pop(k, None)
    cl = Client(args)
    for op in args.ops:
        print(run_op(cl, op), flush=True)
    if cl.chan is not None:
        cl.chan.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
