/* A gateway plugin in C (ABI 1.1, no batch entry), for the crash tests: it dies the ways native
 * code does, which no catch_unwind stops. `handle` picks by the delivery's event_type:
 *   crash_segv   writes through a null pointer        crash_abort  abort()
 *   crash_exit   exit(3)                               crash_loop   never returns
 *   crash_stack  unbounded recursion (stack overflow)  anything else: OK
 * A config naming "fork_helper" makes init fork a helper that holds the descriptors 20 s; with
 * it, a file `die-in-init` in the gateway config's folder makes init abort() after the fork.
 * Written against crates/plugin/include/gateway_plugin.h; compiled by the tests with
 * `cc -shared -fPIC -I crates/plugin/include` (see tests/lib.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway_plugin.h"

static int instance_marker;

static int has(GwStr d, const char *needle) {
    size_t n = strlen(needle);
    if (d.len < n) return 0;
    for (size_t i = 0; i + n <= d.len; i++)
        if (memcmp(d.ptr + i, needle, n) == 0) return 1;
    return 0;
}

static uint32_t init(GwStr config, const GwHostApi *host, void **out_instance, GwBuf *out_error) {
    (void)out_error;
    /* A config naming "fork_helper": start a helper process without exec (as a worker pool
     * or a daemonised helper does), which inherits every descriptor and lives 20 s. */
    if (has(config, "fork_helper")) {
        if (fork() == 0) {
            sleep(20);
            _exit(0);
        }
        /* A start that dies in init while the helper holds its output. */
        char marker[4096];
        int n = snprintf(marker, sizeof marker, "%.*s/die-in-init", (int)host->config_dir.len,
                         (const char *)host->config_dir.ptr);
        if (n > 0 && (size_t)n < sizeof marker && access(marker, F_OK) == 0) abort();
    }
    *out_instance = &instance_marker;
    return 0;
}

static volatile int depth_sink;
static int recurse(int depth) {
    volatile char frame[4096];
    if (depth > (1 << 30)) return 0; /* never reached: the stack ends long before */
    frame[0] = (char)depth;
    depth_sink = frame[0];
    return recurse(depth + 1) + frame[0];
}

static uint32_t handle(void *instance, GwStr delivery, GwBuf *out_detail) {
    (void)instance; (void)out_detail;
    if (has(delivery, "\"event_type\":\"crash_segv\"")) { volatile int *p = 0; *p = 1; }
    if (has(delivery, "\"event_type\":\"crash_abort\"")) abort();
    if (has(delivery, "\"event_type\":\"crash_exit\"")) exit(3);
    if (has(delivery, "\"event_type\":\"crash_loop\"")) for (;;) sleep(1);
    if (has(delivery, "\"event_type\":\"crash_stack\"")) return (uint32_t)recurse(0);
    return 0;
}

static void free_buf(GwBuf b) { free(b.ptr); }
static void shutdown_instance(void *instance) { (void)instance; }

/* ABI 1.1 without a batch entry: the host calls handle once per delivery. */
static const GwPluginDescriptor DESCRIPTOR = {
    GW_ABI_MAJOR, GW_ABI_MINOR, sizeof(GwPluginDescriptor),
    "c fixture; no SDK", "cplugin", "1.0.0",
    init, handle, free_buf, shutdown_instance, NULL,
};

const GwPluginDescriptor *gateway_plugin_v1(void) { return &DESCRIPTOR; }
