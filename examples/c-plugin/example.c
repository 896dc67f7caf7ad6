/*
 * example_c — a gateway plugin in plain C11 + POSIX, written against gateway_plugin.h only.
 *
 * It appends every delivery it receives, one JSON object per line, to a file, and refuses the
 * event types its config lists. Config (the [[plugins]] config table, handed over as JSON):
 *
 *   path                string, required: the file (relative paths resolve against the gateway
 *                       config's folder; the folder must exist). Opened once, in append mode.
 *   reject_event_types  array of strings, optional: deliveries of these event types are
 *                       refused (GW_OUTCOME_REJECT: a dead letter) and not written.
 *
 * Any other key, a missing path or a value of the wrong type refuses init with a message (the
 * ABI's error path: GW_INIT_ERROR and a buffer in *out_error, which the host frees through
 * free_buf).
 *
 * Outcomes:
 *   GW_OUTCOME_OK      the line is written and fdatasync'ed (durable before the host marks the
 *                      delivery done). The line is the delivery as received, but for the
 *                      envelope's verification token (event.header.token in schema 2.0,
 *                      event.token in 1.0), written "<redacted>": it is a secret.
 *   GW_OUTCOME_REJECT  the event type is listed in reject_event_types, or the delivery has no
 *                      string "event_type" (not a delivery the host would send).
 *   GW_OUTCOME_RETRY   writing or syncing failed (disk full, I/O error) or memory ran out: the
 *                      host retries with backoff, no sooner than retry_after_ms (1 s). A partly
 *                      written line is cut off again, so the file stays one object per line.
 *
 * Threads: the host may call handle and handle_batch from several threads at once on one
 * instance. The config is read-only after init; the file is written under a mutex, one write()
 * per call (a batch is one write() and one fdatasync). Memory: everything init allocates is
 * freed by shutdown (or by init itself when it fails); every detail or error buffer returned is
 * malloc'ed and freed by free_buf.
 *
 * Build: cc -shared -fPIC -std=c11 -Wall -Wextra -Werror -I crates/plugin/include \
 *           -o libexample_c.so examples/c-plugin/example.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway_plugin.h"

/* Retries after an I/O error wait at least this long (the host's backoff may wait longer). */
#define RETRY_AFTER_MS 1000
/* Deeper JSON is refused (the host never sends deeper: serde_json stops at 128). */
#define MAX_DEPTH 128

/* ---------------------------------------------------------------------------------------------
 * A minimal JSON reader: enough to walk an object's members, decode strings and skip any value.
 * It validates what it reads (strings, numbers, literals, nesting), never allocates except for
 * decoded strings, and never reads past `end`.
 */

typedef struct {
    const char *p;
    const char *end;
} Cursor;

static void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* Consumes `ch` after whitespace; 1 when it was there. */
static int eat(Cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Appends the UTF-8 encoding of `cp` to `out` (room for 4 bytes is guaranteed by the caller). */
static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Validates the JSON string at the cursor (after whitespace) and moves past it. With `buf`
 * (room for as many bytes as the encoded string), writes the decoded bytes there; `*len` is
 * their count. Returns 0, or -1 when malformed. */
static int scan_string(Cursor *c, char *buf, size_t *len) {
    if (!eat(c, '"')) return -1;
    size_t n = 0;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            *len = n;
            return 0;
        }
        if (ch < 0x20) return -1; /* control characters must be escaped */
        if (ch != '\\') {
            if (buf) buf[n] = (char)ch;
            n++;
            c->p++;
            continue;
        }
        if (c->end - c->p < 2) return -1;
        char e = c->p[1];
        c->p += 2;
        char simple = 0;
        switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return -1;
        }
        if (simple) {
            if (buf) buf[n] = simple;
            n++;
            continue;
        }
        unsigned cp;
        if (c->end - c->p < 4 || !hex4(c->p, &cp)) return -1;
        c->p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || !hex4(c->p + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            c->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return -1; /* a lone low surrogate */
        }
        /* "\uXXXX" is 6 encoded bytes and at most 3 decoded; a pair 12 and 4: it always fits. */
        if (buf) n += put_utf8(buf + n, cp);
        else n += 4;
    }
    return -1; /* unterminated */
}

/* Reads a JSON string at the cursor. With `out`, stores a malloc'ed, NUL-terminated decoded copy
 * (the caller frees it; it may contain NUL bytes, written \u0000) and its length in `*out_len`
 * (when not NULL). Returns 0, -1 when malformed, -2 when out of memory. */
static int read_string(Cursor *c, char **out, size_t *out_len) {
    Cursor probe = *c;
    size_t n;
    if (scan_string(&probe, NULL, &n) != 0) return -1;
    if (!out) {
        *c = probe;
        return 0;
    }
    char *buf = malloc((size_t)(probe.p - c->p) + 1); /* the encoded length bounds the decoded */
    if (!buf) return -2;
    if (scan_string(c, buf, &n) != 0) { /* cannot happen: the probe passed */
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    if (out_len) *out_len = n;
    return 0;
}

static int read_number(Cursor *c) {
    skip_ws(c);
    const char *s = c->p;
    if (c->p < c->end && *c->p == '-') c->p++;
    const char *digits = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    if (c->p == digits) return -1;
    if (c->p < c->end && *c->p == '.') {
        const char *frac = ++c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
        if (c->p == frac) return -1;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        const char *exp = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
        if (c->p == exp) return -1;
    }
    return c->p > s ? 0 : -1;
}

static int read_literal(Cursor *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return -1;
    c->p += n;
    return 0;
}

/* Skips one JSON value of any kind; 0 on success, -1 when malformed or nested too deep. */
static int skip_value(Cursor *c, int depth) {
    if (depth > MAX_DEPTH) return -1;
    skip_ws(c);
    if (c->p >= c->end) return -1;
    switch (*c->p) {
    case '"':
        return read_string(c, NULL, NULL);
    case '{':
        c->p++;
        if (eat(c, '}')) return 0;
        do {
            if (read_string(c, NULL, NULL) != 0 || !eat(c, ':') || skip_value(c, depth + 1) != 0)
                return -1;
        } while (eat(c, ','));
        return eat(c, '}') ? 0 : -1;
    case '[':
        c->p++;
        if (eat(c, ']')) return 0;
        do {
            if (skip_value(c, depth + 1) != 0) return -1;
        } while (eat(c, ','));
        return eat(c, ']') ? 0 : -1;
    case 't': return read_literal(c, "true");
    case 'f': return read_literal(c, "false");
    case 'n': return read_literal(c, "null");
    default: return read_number(c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Buffers handed to the host: malloc'ed here, freed by free_buf.
 */

/* A GwBuf holding printf-formatted text; the empty buffer when memory runs out (the host then
 * shows no message, which is still correct). */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static GwBuf buf_printf(const char *fmt, ...) {
    GwBuf b = {NULL, 0, 0};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return b;
    uint8_t *p = malloc((size_t)n + 1);
    if (!p) return b;
    va_start(ap, fmt);
    vsnprintf((char *)p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b.ptr = p;
    b.len = (size_t)n;
    b.cap = (size_t)n + 1;
    return b;
}

/* `text` as a JSON string body (quotes, backslashes and control characters escaped), malloc'ed. */
static char *json_escape(const char *text) {
    size_t len = strlen(text);
    char *out = malloc(len * 6 + 1); /* \u00XX is the longest escape */
    if (!out) return NULL;
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)text; *s; s++) {
        if (*s == '"' || *s == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*s;
        } else if (*s < 0x20) {
            n += (size_t)sprintf(out + n, "\\u%04x", (unsigned)*s);
        } else {
            out[n++] = (char)*s;
        }
    }
    out[n] = '\0';
    return out;
}

/* The outcome detail the host expects: {"reason": "...", "retry_after_ms": N} (JSON). */
static GwBuf detail(const char *reason, int retry_after_ms) {
    char *escaped = json_escape(reason);
    if (!escaped) return (GwBuf){NULL, 0, 0};
    GwBuf b = retry_after_ms > 0
                  ? buf_printf("{\"reason\":\"%s\",\"retry_after_ms\":%d}", escaped, retry_after_ms)
                  : buf_printf("{\"reason\":\"%s\"}", escaped);
    free(escaped);
    return b;
}

/* ---------------------------------------------------------------------------------------------
 * The instance.
 */

typedef struct {
    const GwHostApi *host;       /* valid until shutdown returns (ABI) */
    char *path;                  /* the resolved file path, for messages */
    int fd;                      /* opened O_APPEND; written only under `lock` */
    pthread_mutex_t lock;        /* one writer at a time, so lines never interleave or tear */
    char **reject_types;         /* decoded event types refused with GW_OUTCOME_REJECT */
    size_t reject_count;
} Instance;

static void log_line(const GwHostApi *host, uint32_t level, const char *text) {
    GwStr message = {(const uint8_t *)text, strlen(text)};
    if (host && host->log) host->log(host->ctx, level, message);
}

static void free_config(Instance *in) {
    for (size_t i = 0; i < in->reject_count; i++) free(in->reject_types[i]);
    free(in->reject_types);
    free(in->path);
}

/* Joins a relative `path` to the host's config folder; NULL when out of memory. */
static char *resolve(const GwHostApi *host, const char *path) {
    size_t plen = strlen(path);
    size_t dlen = host ? host->config_dir.len : 0;
    if (path[0] == '/' || dlen == 0) {
        char *out = malloc(plen + 1);
        if (out) memcpy(out, path, plen + 1);
        return out;
    }
    char *out = malloc(dlen + 1 + plen + 1);
    if (!out) return NULL;
    memcpy(out, host->config_dir.ptr, dlen);
    out[dlen] = '/';
    memcpy(out + dlen + 1, path, plen + 1);
    return out;
}

/* Reads the config object into `in`; on failure returns a message (malloc'ed GwBuf). */
static int parse_config(GwStr config, Instance *in, GwBuf *error) {
    Cursor c = {(const char *)config.ptr, (const char *)config.ptr + config.len};
    char *key = NULL;
    char *path = NULL;
    int have_rejects = 0;
    if (config.len == 0) { /* no config table: the same as {} */
        *error = buf_printf("example_c config: `path` is required");
        return -1;
    }
    if (!eat(&c, '{')) goto not_an_object;
    if (!eat(&c, '}')) {
        do {
            size_t key_len;
            int r = read_string(&c, &key, &key_len);
            if (r == -2) goto oom;
            if (r != 0 || !eat(&c, ':')) goto malformed;
            if (strcmp(key, "path") == 0 && key_len == 4) {
                size_t len;
                if (path) {
                    *error = buf_printf("example_c config: `path` is given twice");
                    goto fail;
                }
                skip_ws(&c);
                r = read_string(&c, &path, &len);
                if (r == -2) goto oom;
                if (r != 0 || len == 0 || strlen(path) != len) {
                    *error = buf_printf("example_c config: `path` must be a non-empty string");
                    goto fail;
                }
            } else if (strcmp(key, "reject_event_types") == 0 && key_len == 18) {
                if (have_rejects) {
                    *error = buf_printf("example_c config: `reject_event_types` is given twice");
                    goto fail;
                }
                have_rejects = 1;
                if (!eat(&c, '[')) goto rejects_type;
                if (!eat(&c, ']')) {
                    do {
                        char *t;
                        size_t len;
                        skip_ws(&c);
                        if (c.p >= c.end || *c.p != '"') goto rejects_type;
                        r = read_string(&c, &t, &len);
                        if (r == -2) goto oom;
                        if (r != 0) goto malformed;
                        size_t size = (in->reject_count + 1) * sizeof(char *);
                        char **grown = realloc(in->reject_types, size);
                        if (!grown) { free(t); goto oom; }
                        in->reject_types = grown;
                        in->reject_types[in->reject_count++] = t;
                    } while (eat(&c, ','));
                    if (!eat(&c, ']')) goto malformed;
                }
            } else {
                char *shown = json_escape(key);
                *error = buf_printf("example_c config: unknown key `%s` (known: `path`, "
                                    "`reject_event_types`)",
                                    shown ? shown : "?");
                free(shown);
                goto fail;
            }
            free(key);
            key = NULL;
        } while (eat(&c, ','));
        if (!eat(&c, '}')) goto malformed;
    }
    skip_ws(&c);
    if (c.p != c.end) goto malformed;
    if (!path) {
        *error = buf_printf("example_c config: `path` is required");
        goto fail;
    }
    in->path = path;
    return 0;

not_an_object:
    *error = buf_printf("example_c config: expected a JSON object");
    goto fail;
rejects_type:
    *error = buf_printf("example_c config: `reject_event_types` must be an array of strings");
    goto fail;
malformed:
    *error = buf_printf("example_c config: malformed JSON at byte %zu",
                        (size_t)(c.p - (const char *)config.ptr));
    goto fail;
oom:
    *error = buf_printf("example_c config: out of memory");
fail:
    free(key);
    free(path);
    return -1;
}

static uint32_t init(GwStr config, const GwHostApi *host, void **out_instance, GwBuf *out_error) {
    if (!host || host->api_major != GW_ABI_MAJOR) {
        *out_error = buf_printf("example_c: host ABI major %u, this plugin speaks %u",
                                host ? host->api_major : 0u, GW_ABI_MAJOR);
        return GW_INIT_ERROR;
    }
    Instance *in = calloc(1, sizeof *in);
    if (!in) {
        *out_error = buf_printf("example_c: out of memory");
        return GW_INIT_ERROR;
    }
    in->host = host;
    in->fd = -1;
    char *relative = NULL;
    if (parse_config(config, in, out_error) != 0) goto fail;
    relative = in->path;
    in->path = resolve(host, relative);
    free(relative);
    if (!in->path) {
        *out_error = buf_printf("example_c: out of memory");
        goto fail;
    }
    in->fd = open(in->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (in->fd < 0) {
        char why[128];
        if (strerror_r(errno, why, sizeof why) != 0) snprintf(why, sizeof why, "errno %d", errno);
        *out_error = buf_printf("example_c: cannot open %s: %s", in->path, why);
        goto fail;
    }
    if (pthread_mutex_init(&in->lock, NULL) != 0) {
        *out_error = buf_printf("example_c: cannot create a mutex");
        close(in->fd);
        goto fail;
    }
    GwBuf hello = buf_printf("example_c: appending deliveries to %s; %zu event type(s) refused",
                             in->path, in->reject_count);
    if (hello.ptr) log_line(host, GW_LOG_INFO, (const char *)hello.ptr);
    free(hello.ptr);
    *out_instance = in;
    return GW_INIT_OK;

fail:
    free_config(in);
    free(in);
    return GW_INIT_ERROR;
}

/* What one delivery asks for, before anything is written. */
typedef enum { ACCEPT, REFUSE, MALFORMED, NO_MEMORY } Verdict;

/* The verification token's string values in one delivery (quotes included), as byte offsets in
 * it, in order: event.token (schema 1.0) and event.header.token (2.0); at most one each. */
#define MAX_TOKENS 2
typedef struct {
    size_t at[MAX_TOKENS], len[MAX_TOKENS];
    size_t count;
} Tokens;

/* What a token is written as. */
static const char REDACTED[] = "\"<redacted>\"";

/* Walks the JSON object at the cursor (the envelope: `level` 0, or its header: 1), validating
 * it as skip_value does, and records in `*tokens` where its "token" member's string value is
 * (offsets from `base`); in the envelope, looks into its "header" object too. 0, -1 when
 * malformed, -2 when out of memory. */
static int find_tokens(Cursor *c, const char *base, Tokens *tokens, int level) {
    if (!eat(c, '{')) return -1;
    if (eat(c, '}')) return 0;
    do {
        char *key = NULL;
        size_t key_len;
        int r = read_string(c, &key, &key_len);
        if (r != 0) return r;
        int is_token = key_len == 5 && memcmp(key, "token", 5) == 0;
        int is_header = level == 0 && key_len == 6 && memcmp(key, "header", 6) == 0;
        free(key);
        if (!eat(c, ':')) return -1;
        skip_ws(c);
        if (is_token && c->p < c->end && *c->p == '"' && tokens->count < MAX_TOKENS) {
            const char *start = c->p;
            r = read_string(c, NULL, NULL);
            tokens->at[tokens->count] = (size_t)(start - base);
            tokens->len[tokens->count++] = (size_t)(c->p - start);
        } else if (is_header && c->p < c->end && *c->p == '{') {
            r = find_tokens(c, base, tokens, 1);
        } else {
            r = skip_value(c, level + 2);
        }
        if (r != 0) return r;
    } while (eat(c, ','));
    return eat(c, '}') ? 0 : -1;
}

/* Finds the top-level "event_type" of a delivery and checks it against the config, and where
 * the envelope ("event") holds its token. On REFUSE or MALFORMED, `*why` is set to a malloc'ed
 * reason (or NULL when memory ran out). */
static Verdict judge(const Instance *in, GwStr delivery, char **why, Tokens *tokens) {
    Cursor c = {(const char *)delivery.ptr, (const char *)delivery.ptr + delivery.len};
    char *key = NULL, *type = NULL;
    *why = NULL;
    tokens->count = 0;
    if (delivery.len == 0 || !eat(&c, '{')) goto malformed;
    if (!eat(&c, '}')) {
        do {
            size_t key_len;
            int r = read_string(&c, &key, &key_len);
            if (r == -2) goto no_memory;
            if (r != 0 || !eat(&c, ':')) goto malformed;
            skip_ws(&c);
            if (!type && key_len == 10 && memcmp(key, "event_type", 10) == 0 && c.p < c.end &&
                *c.p == '"') {
                r = read_string(&c, &type, NULL);
                if (r == -2) goto no_memory;
            } else if (key_len == 5 && memcmp(key, "event", 5) == 0 && c.p < c.end &&
                       *c.p == '{') {
                r = find_tokens(&c, (const char *)delivery.ptr, tokens, 0);
                if (r == -2) goto no_memory;
            } else {
                r = skip_value(&c, 1);
            }
            free(key);
            key = NULL;
            if (r != 0) goto malformed;
        } while (eat(&c, ','));
        if (!eat(&c, '}')) goto malformed;
    }
    if (!type) goto malformed;
    for (size_t i = 0; i < in->reject_count; i++) {
        if (strcmp(type, in->reject_types[i]) == 0) {
            GwBuf reason =
                buf_printf("example_c: event type `%s` is refused by reject_event_types", type);
            *why = (char *)reason.ptr;
            free(type);
            return REFUSE;
        }
    }
    free(type);
    return ACCEPT;

no_memory:
    free(key);
    free(type);
    return NO_MEMORY;
malformed:
    free(key);
    free(type);
    *why = (char *)buf_printf("example_c: not a delivery (no string \"event_type\" member)").ptr;
    return MALFORMED;
}

/* Appends `len` bytes with one write() and syncs them, under the lock. 0, or an errno. A partial
 * write is cut off again so the file never holds half a line. */
static int append(Instance *in, const char *bytes, size_t len) {
    int err = 0;
    pthread_mutex_lock(&in->lock);
    struct stat st;
    off_t before = fstat(in->fd, &st) == 0 ? st.st_size : -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(in->fd, bytes + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { err = n < 0 ? errno : EIO; break; }
        done += (size_t)n;
    }
    if (!err && fdatasync(in->fd) != 0) err = errno;
    if (err && done > 0 && before >= 0) {
        if (ftruncate(in->fd, before) != 0) { /* nothing better to do: the retry appends anew */ }
    }
    pthread_mutex_unlock(&in->lock);
    return err;
}

/* Copies one delivery into `out` at `*at` as one line: raw newlines (only ever whitespace
 * between JSON tokens; inside strings they are escaped) become spaces, and each token's string
 * value becomes REDACTED (room for it is the caller's: see handle_many). */
static void put_line(char *out, size_t *at, GwStr delivery, const Tokens *tokens) {
    size_t next = 0;
    for (size_t i = 0; i < delivery.len; i++) {
        if (next < tokens->count && i == tokens->at[next]) {
            memcpy(out + *at, REDACTED, sizeof REDACTED - 1);
            *at += sizeof REDACTED - 1;
            i += tokens->len[next++] - 1;
            continue;
        }
        char ch = (char)delivery.ptr[i];
        out[(*at)++] = (ch == '\n' || ch == '\r') ? ' ' : ch;
    }
    out[(*at)++] = '\n';
}

static GwBuf io_retry(const Instance *in, int err) {
    char why[128];
    if (strerror_r(err, why, sizeof why) != 0) snprintf(why, sizeof why, "errno %d", err);
    GwBuf reason = buf_printf("example_c: cannot append to %s: %s", in->path, why);
    const char *text = reason.ptr ? (const char *)reason.ptr : "example_c: write failed";
    GwBuf d = detail(text, RETRY_AFTER_MS);
    free(reason.ptr);
    return d;
}

/* Handles `count` deliveries: judges each, writes the accepted ones in one append. */
static uint32_t handle_many(Instance *in, const GwStr *deliveries, size_t count, uint32_t *codes,
                            GwBuf *details) {
    Tokens *tokens = calloc(count ? count : 1, sizeof *tokens);
    if (!tokens) {
        for (size_t i = 0; i < count; i++) {
            codes[i] = GW_OUTCOME_RETRY;
            details[i] = detail("example_c: out of memory", RETRY_AFTER_MS);
        }
        return GW_OUTCOME_OK;
    }
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        char *why = NULL;
        switch (judge(in, deliveries[i], &why, &tokens[i])) {
        case ACCEPT:
            codes[i] = GW_OUTCOME_OK;
            total += deliveries[i].len + 1 + tokens[i].count * (sizeof REDACTED - 1);
            break;
        case REFUSE:
        case MALFORMED:
            codes[i] = GW_OUTCOME_REJECT;
            details[i] = detail(why ? why : "example_c: refused", 0);
            break;
        case NO_MEMORY:
            codes[i] = GW_OUTCOME_RETRY;
            details[i] = detail("example_c: out of memory", RETRY_AFTER_MS);
            break;
        }
        free(why);
    }
    if (total == 0) {
        free(tokens);
        return GW_OUTCOME_OK;
    }
    char *lines = malloc(total);
    int err = ENOMEM;
    if (lines) {
        size_t at = 0;
        for (size_t i = 0; i < count; i++)
            if (codes[i] == GW_OUTCOME_OK) put_line(lines, &at, deliveries[i], &tokens[i]);
        err = append(in, lines, at);
        free(lines);
    }
    free(tokens);
    if (err) {
        for (size_t i = 0; i < count; i++) {
            if (codes[i] != GW_OUTCOME_OK) continue;
            codes[i] = GW_OUTCOME_RETRY;
            details[i] = io_retry(in, err);
        }
    }
    return GW_OUTCOME_OK;
}

static uint32_t handle(void *instance, GwStr delivery, GwBuf *out_detail) {
    uint32_t code = GW_OUTCOME_RETRY;
    handle_many(instance, &delivery, 1, &code, out_detail);
    return code;
}

static uint32_t handle_batch(void *instance, const GwStr *deliveries, size_t count,
                             uint32_t *out_codes, GwBuf *out_details) {
    return handle_many(instance, deliveries, count, out_codes, out_details);
}

static void free_buf(GwBuf buf) { free(buf.ptr); }

static void shutdown_instance(void *instance) {
    Instance *in = instance;
    if (!in) return;
    close(in->fd);
    pthread_mutex_destroy(&in->lock);
    free_config(in);
    free(in);
}

static const GwPluginDescriptor DESCRIPTOR = {
    .abi_major = GW_ABI_MAJOR,
    .abi_minor = GW_ABI_MINOR,
    .struct_size = sizeof(GwPluginDescriptor),
    .build_tag = "example_c 0.1.0; C11 against gateway_plugin.h (ABI 1.1)",
    .name = "example_c",
    .version = "0.1.0",
    .init = init,
    .handle = handle,
    .free_buf = free_buf,
    .shutdown = shutdown_instance,
    .handle_batch = handle_batch,
};

const GwPluginDescriptor *gateway_plugin_v1(void) { return &DESCRIPTOR; }
