/*
 * gateway_plugin.h — the C ABI between the gateway (host) and a plugin library, ABI 1.1.
 *
 * The same contract as crates/plugin/src/abi.rs (the Rust definitions); a test compiles this
 * header and fails when a size, an offset or a constant differs from them.
 *
 * A plugin is a shared library exporting one function, gateway_plugin_v1, that returns a pointer
 * to a static GwPluginDescriptor. The host checks, in this order and before calling anything:
 * abi_major == GW_ABI_MAJOR, struct_size >= GW_DESCRIPTOR_SIZE_1_0, abi_minor <= the host's
 * minor, and for abi_minor >= 1 that struct_size covers handle_batch. The first four fields
 * (build_tag too) never move.
 *
 * Ownership: a GwStr is borrowed (valid only during the call it is passed to; copy what you keep).
 * A GwBuf you return (an error message, an outcome detail) is yours: the host reads it and
 * releases it by calling your free_buf exactly once; it never frees it with its own allocator.
 * Return an empty GwBuf (ptr NULL) for "nothing".
 *
 * Threading: init and shutdown run once per instance, on any host thread (shutdown usually not
 * on init's: keep no thread-local state between them). handle and handle_batch may be called from
 * several host threads at once on one instance (up to its max_concurrency calls), so an instance
 * must be thread-safe; shutdown never overlaps them. host->log may be called from any thread.
 *
 * Outcome details are UTF-8 JSON {"reason": "...", "retry_after_ms": <integer or null>}; a detail
 * that is not such JSON becomes the reason as text. Unknown outcome codes are dead letters.
 * Delivery JSON (the input of handle): {"delivery_id", "attempt", "plugin", "app", "event_id",
 * "event_type", "received_at" (Unix ms), "event" (the decrypted envelope as Lark sent it)};
 * every field is described in crates/plugin/delivery.schema.json (JSON Schema 2020-12). A
 * complete plugin in C: examples/c-plugin/example.c; the guide: docs/plugins.md.
 *
 * Native code that crashes (segfault, abort, exit) takes the gateway's process with it unless
 * the plugin is configured with isolation = "process"; the host then counts the crash and
 * dead-letters a delivery that crashed it max_crashes times.
 */
#ifndef GATEWAY_PLUGIN_H
#define GATEWAY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GW_ABI_MAJOR 1u
#define GW_ABI_MINOR 1u

/* init results */
#define GW_INIT_OK 0u       /* *out_instance is set (non-NULL) */
#define GW_INIT_ERROR 1u    /* *out_error may hold a UTF-8 message */
#define GW_INIT_PANICKED 2u /* *out_error may hold the message */

/* handle outcomes */
#define GW_OUTCOME_OK 0u       /* done */
#define GW_OUTCOME_RETRY 1u    /* transient: retried with backoff, at least retry_after_ms later
                                  (cut to [delivery] max_backoff when longer) */
#define GW_OUTCOME_REJECT 2u   /* permanent: dead letter */
#define GW_OUTCOME_PANICKED 3u /* dead letter; the host replaces the instance */

/* log levels of GwHostApi.log (any other number is logged as a warning) */
#define GW_LOG_ERROR 1u
#define GW_LOG_WARN 2u
#define GW_LOG_INFO 3u
#define GW_LOG_DEBUG 4u
#define GW_LOG_TRACE 5u

/* Borrowed bytes, owned by the caller, valid only during the call. ptr may be NULL when len is 0. */
typedef struct GwStr {
    const uint8_t *ptr;
    size_t len;
} GwStr;

/* A buffer the plugin allocated; the host releases it with the plugin's free_buf. */
typedef struct GwBuf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} GwBuf;

/* Services of the host, valid (and unchanged) until the instance's shutdown returns (when init
 * fails: until init returns). This host never frees it, and drops lines logged after that point. */
typedef struct GwHostApi {
    uint32_t api_major;   /* the host's GW_ABI_MAJOR */
    uint32_t api_minor;   /* the host's minor: which fields appended after 1.0 exist */
    uint32_t struct_size; /* sizeof(GwHostApi) as the host built it */
    const void *ctx;      /* pass back as the first argument of log */
    /* A log line (level GW_LOG_*, message UTF-8, borrowed); thread-safe. */
    void (*log)(const void *ctx, uint32_t level, GwStr message);
    GwStr config_dir;     /* the gateway config's folder (relative paths resolve against it) */
    GwStr instance_name;  /* [[plugins]] name */
} GwHostApi;

typedef struct GwPluginDescriptor {
    uint32_t abi_major;   /* GW_ABI_MAJOR; never moves */
    uint32_t abi_minor;   /* at most the host's minor; never moves */
    uint32_t struct_size; /* sizeof(GwPluginDescriptor) as built; never moves */
    /* build_tag, name and version: static, NUL-terminated, UTF-8 and not NULL (the loader
     * refuses the library otherwise: a Latin-1 byte in the build tag included). */
    const char *build_tag; /* what built the plugin; never moves */
    const char *name;
    const char *version;
    /* init, handle, free_buf and shutdown must not be NULL (the loader refuses the library). */
    /* config: UTF-8 JSON object (borrowed). On GW_INIT_OK write a non-NULL instance. On any
     * other result the host ignores *out_instance and never calls shutdown for it: free what a
     * failed init made before returning. */
    uint32_t (*init)(GwStr config, const GwHostApi *host, void **out_instance, GwBuf *out_error);
    /* One delivery (UTF-8 JSON, borrowed) -> GW_OUTCOME_*; may write a detail buffer. */
    uint32_t (*handle)(void *instance, GwStr delivery, GwBuf *out_detail);
    /* Releases a buffer this plugin returned (exactly once per non-empty buffer). */
    void (*free_buf)(GwBuf buf);
    /* Destroys an instance, once, after every call on it returned. */
    void (*shutdown)(void *instance);
    /* ABI 1.1, may be NULL: count (>= 1) deliveries in one call. Write out_codes[i] and optionally
     * out_details[i] for each (host-owned arrays, details preset to empty; a code left unwritten
     * is retried, its reason saying so), return GW_OUTCOME_OK;
     * or return GW_OUTCOME_PANICKED when the batch failed as a whole (any other code is taken as
     * that too; out_details[0] may hold the message, whatever out_codes[0] says): the host then
     * replaces the instance and calls handle for each delivery. */
    uint32_t (*handle_batch)(void *instance, const GwStr *deliveries, size_t count,
                             uint32_t *out_codes, GwBuf *out_details);
} GwPluginDescriptor;

/* The 1.0 descriptor (everything before handle_batch): the least a host accepts. */
#define GW_DESCRIPTOR_SIZE_1_0 offsetof(GwPluginDescriptor, handle_batch)

/* The one symbol a plugin exports; returns the same static descriptor every time. */
const GwPluginDescriptor *gateway_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* GATEWAY_PLUGIN_H */
