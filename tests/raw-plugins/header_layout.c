/* Prints the layout gateway_plugin.h gives the ABI types, one "name value" per line, so the
 * tests can compare it with the Rust definitions (crates/plugin/src/abi.rs). */
#include <stdio.h>

#include "gateway_plugin.h"

#define SIZE(t) printf("sizeof %s %zu\n", #t, sizeof(t))
#define OFF(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(t, f))
#define CONST(c) printf("const %s %u\n", #c, (unsigned)(c))

int main(void) {
    SIZE(GwStr); OFF(GwStr, ptr); OFF(GwStr, len);
    SIZE(GwBuf); OFF(GwBuf, ptr); OFF(GwBuf, len); OFF(GwBuf, cap);
    SIZE(GwHostApi);
    OFF(GwHostApi, api_major); OFF(GwHostApi, api_minor); OFF(GwHostApi, struct_size);
    OFF(GwHostApi, ctx); OFF(GwHostApi, log); OFF(GwHostApi, config_dir);
    OFF(GwHostApi, instance_name);
    SIZE(GwPluginDescriptor);
    OFF(GwPluginDescriptor, abi_major); OFF(GwPluginDescriptor, abi_minor);
    OFF(GwPluginDescriptor, struct_size); OFF(GwPluginDescriptor, build_tag);
    OFF(GwPluginDescriptor, name); OFF(GwPluginDescriptor, version);
    OFF(GwPluginDescriptor, init); OFF(GwPluginDescriptor, handle);
    OFF(GwPluginDescriptor, free_buf); OFF(GwPluginDescriptor, shutdown);
    OFF(GwPluginDescriptor, handle_batch);
    CONST(GW_ABI_MAJOR); CONST(GW_ABI_MINOR); CONST(GW_DESCRIPTOR_SIZE_1_0);
    CONST(GW_INIT_OK); CONST(GW_INIT_ERROR); CONST(GW_INIT_PANICKED);
    CONST(GW_OUTCOME_OK); CONST(GW_OUTCOME_RETRY); CONST(GW_OUTCOME_REJECT);
    CONST(GW_OUTCOME_PANICKED);
    CONST(GW_LOG_ERROR); CONST(GW_LOG_WARN); CONST(GW_LOG_INFO); CONST(GW_LOG_DEBUG);
    CONST(GW_LOG_TRACE);
    return 0;
}
