#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/rpc_client.h"
#include "mhsm/v1/keys.pb-c.h"

static void test_split_endpoint(void **state)
{
    (void)state;
    char h[64], p[8];
    assert_int_equal(mh_client_split_endpoint("127.0.0.1:8443", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_string_equal(p, "8443");
    assert_int_equal(mh_client_split_endpoint("[::1]:1", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "::1");
    assert_string_equal(p, "1");
    assert_int_equal(mh_client_split_endpoint("hsm.example:65535", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "hsm.example");
    static const char *const BAD[] = {
        "",        "host",    "host:",       ":8443",    "host:0",    "host:65536",
        "host:08", "host:-1", "host:8a",     "::1:8443", "[::1]8443", "[::1:8443",
        "a b:1",   "h/x:1",   "host:123456", "[]:1",     "h\x7f:1",   "host:+1",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        assert_int_equal(mh_client_split_endpoint(BAD[i], h, sizeof h, p, sizeof p), MH_EINVAL);
    char small[4];
    assert_int_equal(mh_client_split_endpoint("abcd:1", small, sizeof small, p, sizeof p),
                     MH_EINVAL);
}

static void expect_decode(const char *in, const char *want)
{
    struct mh_buf b = {0};
    assert_int_equal(mh_client_percent_decode(in, strlen(in), &b), 0);
    assert_int_equal(b.len, strlen(want));
    if (b.len > 0)
        assert_memory_equal(b.data, want, b.len);
    mh_buf_free(&b);
}

static void test_percent_decode(void **state)
{
    (void)state;
    expect_decode("", "");
    expect_decode("plain text", "plain text");
    expect_decode("100%25 sure", "100% sure");
    expect_decode("caf%C3%A9 %e2%9c%93", "caf\xc3\xa9 \xe2\x9c\x93");
    expect_decode("%0A%7e", "\n~");
    /* lenient: a '%' without two hex digits stays */
    expect_decode("50%", "50%");
    expect_decode("50%2", "50%2");
    expect_decode("%zz%", "%zz%");
    expect_decode("%%41", "%A");
    expect_decode("%4", "%4");
    /* embedded NUL decodes to a NUL byte */
    struct mh_buf b = {0};
    assert_int_equal(mh_client_percent_decode("a%00b", 5, &b), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    mh_buf_free(&b);
}

static void test_format_timeout(void **state)
{
    (void)state;
    char t[16];
    mh_client_format_timeout(1, t);
    assert_string_equal(t, "1m");
    mh_client_format_timeout(0, t);
    assert_string_equal(t, "1m");
    mh_client_format_timeout(30000, t);
    assert_string_equal(t, "30000m");
    mh_client_format_timeout(99999999, t);
    assert_string_equal(t, "99999999m");
    mh_client_format_timeout(100000000, t);
    assert_string_equal(t, "100000S");
    mh_client_format_timeout(100000001, t);
    assert_string_equal(t, "100001S"); /* rounded up, never shorter */
    mh_client_format_timeout(UINT64_MAX, t);
    assert_string_equal(t, "99999999H");
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(mh_client_status_name(0), "OK");
    assert_string_equal(mh_client_status_name(4), "DEADLINE_EXCEEDED");
    assert_string_equal(mh_client_status_name(5), "NOT_FOUND");
    assert_string_equal(mh_client_status_name(9), "FAILED_PRECONDITION");
    assert_string_equal(mh_client_status_name(14), "UNAVAILABLE");
    assert_string_equal(mh_client_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(mh_client_status_name(17), "UNKNOWN");
    assert_string_equal(mh_client_status_name(-1), "UNKNOWN");
}

/* A valid framed GetRandomBytesResponse. */
static void framed(struct mh_buf *out, const uint8_t *value, size_t n)
{
    Mhsm__V1__GetRandomBytesResponse r = MHSM__V1__GET_RANDOM_BYTES_RESPONSE__INIT;
    r.value.data = (uint8_t *)value;
    r.value.len = n;
    size_t len = mhsm__v1__get_random_bytes_response__get_packed_size(&r);
    uint8_t *p;
    assert_int_equal(mh_buf_extend(out, len + 5, &p), 0);
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    mhsm__v1__get_random_bytes_response__pack(&r, p + 5);
}

static void test_decode_body(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &mhsm__v1__get_random_bytes_response__descriptor;
    struct mh_buf b = {0};
    framed(&b, (const uint8_t *)"abc", 3);
    ProtobufCMessage *m = NULL;
    assert_int_equal(mh_client_decode_body(b.data, b.len, d, &m), 0);
    const Mhsm__V1__GetRandomBytesResponse *r = (const Mhsm__V1__GetRandomBytesResponse *)m;
    assert_int_equal(r->value.len, 3);
    assert_memory_equal(r->value.data, "abc", 3);
    mh_client_response_free(m);
    /* an empty message is a valid response */
    static const uint8_t EMPTY[5] = {0, 0, 0, 0, 0};
    m = NULL;
    assert_int_equal(mh_client_decode_body(EMPTY, 5, d, &m), 0);
    mh_client_response_free(m);

    m = NULL;
    for (size_t cut = 0; cut < b.len; cut++) /* truncated anywhere */
        assert_int_equal(mh_client_decode_body(b.data, cut, d, &m), MH_EPROTO);
    assert_int_equal(mh_buf_append_u8(&b, 0), 0); /* a trailing byte */
    assert_int_equal(mh_client_decode_body(b.data, b.len, d, &m), MH_EPROTO);
    mh_buf_truncate(&b, b.len - 1);
    b.data[0] = 1; /* compressed flag */
    assert_int_equal(mh_client_decode_body(b.data, b.len, d, &m), MH_EPROTO);
    b.data[0] = 0;
    b.data[1] = 0xff; /* a length far beyond the bytes */
    assert_int_equal(mh_client_decode_body(b.data, b.len, d, &m), MH_EPROTO);
    assert_null(m);
    static const uint8_t GARBAGE[] = {0, 0, 0, 0, 3, 0x0a, 0xff, 0xff}; /* bad varint length */
    assert_int_equal(mh_client_decode_body(GARBAGE, sizeof GARBAGE, d, &m), MH_EPROTO);
    mh_buf_free(&b);

    /* mutations never crash; accepted ones decode to a message that frees cleanly */
    struct mh_buf good = {0};
    static const uint8_t V[40] = {1, 2, 3};
    framed(&good, V, sizeof V);
    struct tu_rng rng = {77};
    for (int i = 0; i < 5000; i++) {
        struct mh_buf mut = {0};
        tu_mutate(&rng, good.data, good.len, &mut);
        m = NULL;
        int rv = mh_client_decode_body(mut.data, mut.len, d, &m);
        assert_true(rv == 0 || rv == MH_EPROTO);
        assert_true((rv == 0) == (m != NULL));
        mh_client_response_free(m);
        mh_buf_free(&mut);
    }
    mh_buf_free(&good);
}

static void test_new_errors(void **state)
{
    (void)state;
    struct mh_client *c = (struct mh_client *)1;
    char why[256];
    struct mh_client_config cfg = {.endpoint = "nohost"};
    assert_int_equal(mh_client_new(&cfg, &c, why, sizeof why), MH_EINVAL);
    assert_null(c);
    assert_non_null(strstr(why, "nohost"));
    cfg.endpoint = "127.0.0.1:1";
    cfg.ca_file = "/nonexistent/ca.pem";
    assert_int_equal(mh_client_new(&cfg, &c, why, sizeof why), MH_ECERT);
    assert_non_null(strstr(why, "/nonexistent/ca.pem"));
    cfg.ca_file = NULL;
    cfg.cert_file = "/nonexistent/c.pem";
    assert_int_equal(mh_client_new(&cfg, &c, why, sizeof why), MH_EINVAL);
    cfg.key_file = "/nonexistent/c.key";
    assert_int_equal(mh_client_new(&cfg, &c, why, sizeof why), MH_ECERT);
    assert_non_null(strstr(why, "/nonexistent/c.pem"));
    assert_null(c);
}

static int listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int call_random(struct mh_client *c, uint64_t timeout_ms, int *status)
{
    Mhsm__V1__GetRandomBytesRequest req = MHSM__V1__GET_RANDOM_BYTES_REQUEST__INIT;
    req.count = 4;
    ProtobufCMessage *resp = NULL;
    char *msg = NULL;
    int rv = mh_client_call(c, "/mhsm.v1.Keys/GetRandomBytes", &req.base,
                            &mhsm__v1__get_random_bytes_response__descriptor, timeout_ms, &resp,
                            status, &msg);
    if (rv < 0) {
        assert_null(resp);
        assert_null(msg);
    }
    mh_client_response_free(resp);
    free(msg);
    return rv;
}

static void test_transport_failures(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    uint16_t port;
    int lfd = listen_loopback(&port);
    char ep[32];
    snprintf(ep, sizeof ep, "127.0.0.1:%u", port);
    struct mh_client_config cfg = {.endpoint = ep};
    struct mh_client *c = NULL;
    char why[256];
    assert_int_equal(mh_client_new(&cfg, &c, why, sizeof why), 0);

    /* A peer that accepts (in the kernel backlog) but never speaks TLS: the deadline
     * bounds the handshake. */
    int status;
    assert_int_equal(call_random(c, 300, &status), MH_ETIMEDOUT);
    assert_non_null(strstr(mh_client_errmsg(c), "timed out"));

    /* A peer that answers the ClientHello with garbage: a TLS failure, not a hang. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* never outlive the test */
        for (int i = 0; i < 2; i++) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                _exit(1);
            char buf[512];
            ssize_t got = read(fd, buf, sizeof buf);
            static const char JUNK[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
            ssize_t put = write(fd, JUNK, sizeof JUNK - 1);
            (void)got;
            (void)put;
            close(fd);
        }
        _exit(0);
    }
    /* the first connection was left in the backlog by the timed-out call; the child
     * serves it and a fresh one */
    int rv = call_random(c, 5000, &status);
    assert_true(rv == MH_ECRYPTO || rv == -ECONNRESET);
    assert_true(mh_client_errmsg(c)[0] != 0);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    close(lfd);

    /* Nobody listening any more: connection refused, quickly. */
    assert_int_equal(call_random(c, 5000, &status), -ECONNREFUSED);
    assert_non_null(strstr(mh_client_errmsg(c), "refused"));
    mh_client_free(c);
}

static int take(struct mh_client_resp_headers *h, const char *name, const char *value,
                size_t valuelen)
{
    return mh_client_take_header(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
                                 valuelen);
}

/* Response header fields come from the server: every value is parsed defensively. */
static void test_take_header(void **state)
{
    (void)state;
    struct mh_client_resp_headers h = {.grpc_status = -1};
    assert_int_equal(take(&h, ":status", "503", 3), 0);
    assert_int_equal(h.http_status, 503);
    assert_int_equal(take(&h, "grpc-status", "0", 1), 0);
    assert_int_equal(h.grpc_status, 0);
    assert_int_equal(take(&h, "grpc-status", "14", 2), 0);
    assert_int_equal(h.grpc_status, 14);
    const char *bad[] = {"", "1a", "-1", "1000", " 5", "0x1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h.grpc_status = -1;
        assert_int_equal(take(&h, "grpc-status", bad[i], strlen(bad[i])), 0);
        assert_int_equal(h.grpc_status, MH_CLIENT_UNKNOWN);
    }
    const struct {
        const char *v;
        bool grpc;
    } ct[] = {{"application/grpc", true},     {"application/grpc+proto", true},
              {"application/grpc;a=b", true}, {"application/grpcX", false},
              {"application/grp", false},     {"text/html", false},
              {"application/json", false}};
    for (size_t i = 0; i < sizeof ct / sizeof ct[0]; i++) {
        assert_int_equal(take(&h, "content-type", ct[i].v, strlen(ct[i].v)), 0);
        assert_int_equal(h.grpc_ct, ct[i].grpc);
    }
    /* A long grpc-message is cut at 4096 bytes; a later one replaces it. */
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, 'm', 10000);
    assert_int_equal(take(&h, "grpc-message", big, 10000), 0);
    assert_int_equal(h.gmsg.len, 4096);
    assert_int_equal(take(&h, "grpc-message", "short", 5), 0);
    assert_int_equal(h.gmsg.len, 5);
    assert_memory_equal(h.gmsg.data, "short", 5);
    free(big);
    /* Other fields are ignored, including names that only start like ours. */
    struct mh_client_resp_headers before = h;
    assert_int_equal(take(&h, "grpc-status-details-bin", "7", 1), 0);
    assert_int_equal(take(&h, "x-grpc-status", "7", 1), 0);
    assert_int_equal(h.grpc_status, before.grpc_status);
    mh_buf_free(&h.gmsg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_endpoint),     cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_format_timeout),     cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_decode_body),        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_transport_failures), cmocka_unit_test(test_take_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
