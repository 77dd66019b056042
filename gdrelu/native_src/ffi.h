/* What gdrelu's XLA FFI handlers share (`gdrelu.native`): buffers, the metadata query, and
 * errors. A handler takes its operands as (component, lanes) arrays, lanes a multiple of
 * LANES, and a float64 `config` last. */
#ifndef GDRELU_FFI_H
#define GDRELU_FFI_H
#include <string.h>

#include "xla/ffi/api/c_api.h"

static XLA_FFI_Buffer *buffer(void *arg) { return (XLA_FFI_Buffer *)arg; }

static size_t bytes(XLA_FFI_Buffer *b) {
  size_t n = b->dtype == XLA_FFI_DataType_U32 ? 4 : 8;
  for (int64_t i = 0; i < b->rank; i++) n *= (size_t)b->dims[i];
  return n;
}

/* The head every extension of a call frame starts with. jaxlib 0.10 names its type
 * XLA_FFI_Extension_Base, 0.11 and later XLA_FFI_InternalExtension, with one layout. */
typedef struct {
  size_t struct_size;
  int type;
  void *next;
} extension_head;

/* Whether `call` only asks for the handler's API version (answered here). */
static int metadata_query(XLA_FFI_CallFrame *call) {
  const extension_head *extension = (const extension_head *)call->extension_start;
  if (!extension || extension->type != XLA_FFI_Extension_Metadata) return 0;
  XLA_FFI_Metadata *metadata = ((XLA_FFI_Metadata_Extension *)extension)->metadata;
  metadata->api_version = (XLA_FFI_Api_Version){XLA_FFI_Api_Version_STRUCT_SIZE, 0,
                                                XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR};
  metadata->traits = 0;
  return 1;
}

static XLA_FFI_Error *failure(XLA_FFI_CallFrame *call, const char *message,
                              XLA_FFI_Error_Code code) {
  XLA_FFI_Error_Create_Args error = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, 0, message, code};
  return call->api->XLA_FFI_Error_Create(&error);
}

/* The lanes of (component, lanes) buffer `b`: its last axis. */
static long lanes_of(XLA_FFI_Buffer *b) { return b->rank ? b->dims[b->rank - 1] : 1; }
#endif
