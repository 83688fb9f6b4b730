/* ort_api.h: batchd's own declaration of the part of ONNX Runtime's C API that ort.c calls.
 *
 * The library ships no headers we may use, so this file is written from facts only (slot
 * numbers, argument lists, enum values; see ../shared/onnxruntime/ortapi-slots.tsv and its
 * README). OrtGetApiBase() returns two function pointers; GetApi(version) returns the
 * OrtApi table, which is nothing but an array of function pointers that upstream only
 * ever appends to. So we treat the table as an array of opaque slots and call a slot
 * through a typedef that matches its signature:
 *
 *     OrtStatus *st = ORT_FN(api, CreateSessionOptions)(&options);
 *
 * Only the slots batchd uses are declared. BD_ORT_API_MIN is the oldest API version that
 * has every one of them but the few marked ORT_SINCE_<name> (the newest `since` among the
 * rest: AddSessionConfigEntry, 1.5), so a library that accepts it gives us a table where each
 * slot below means what we think. A slot with ORT_SINCE_<name> N exists only in tables of
 * API version N or newer: ort.c calls it only when ORT_HAS(api_version, name) says so.
 * tests/e2e/test_gpu.py checks every number here against ortapi-slots.tsv.
 *
 * Internal to src/backend (ort.c and its tests). Threads: declarations only. */
#ifndef BD_ORT_API_H
#define BD_ORT_API_H

#include <stddef.h>
#include <stdint.h>

#define BD_ORT_API_WANTED 30 /* the version this file was checked against (ORT 1.30) */
#define BD_ORT_API_MIN 5     /* AddSessionConfigEntry (slot 130) arrived in API 5 */

/* Opaque ORT objects. */
typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtValue OrtValue;
typedef struct OrtTypeInfo OrtTypeInfo;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtAllocator OrtAllocator;
typedef struct OrtCUDAProviderOptionsV2 OrtCUDAProviderOptionsV2;
typedef struct OrtEpAssignedSubgraph OrtEpAssignedSubgraph;
typedef struct OrtEpAssignedNode OrtEpAssignedNode;

/* OrtCUDAProviderOptions, the CUDA options struct of SessionOptionsAppendExecutionProvider_CUDA
 * (slot 152), in its 1.29 layout. The provider reads the struct of its own version, which is a
 * prefix of this one, so zeroing the fields we do not set is right for every version. */
typedef struct {
    int device_id;
    int cudnn_conv_algo_search; /* OrtCudnnConvAlgoSearch: 0 EXHAUSTIVE, 1 HEURISTIC, 2 DEFAULT */
    size_t gpu_mem_limit;       /* SIZE_MAX: no limit */
    int arena_extend_strategy;  /* 0 kNextPowerOfTwo, 1 kSameAsRequested */
    int do_copy_in_default_stream;
    int has_user_compute_stream;
    void *user_compute_stream;
    void *default_memory_arena_cfg; /* OrtArenaCfg * */
    int tunable_op_enable;
    int tunable_op_tuning_enable;
    int tunable_op_max_tuning_duration_ms;
} bd_ort_cuda_options_t;

/* Enums travel as int-sized values. */
enum {
    ORT_LOGGING_LEVEL_VERBOSE = 0,
    ORT_LOGGING_LEVEL_INFO = 1,
    ORT_LOGGING_LEVEL_WARNING = 2,
    ORT_LOGGING_LEVEL_ERROR = 3,
    ORT_LOGGING_LEVEL_FATAL = 4,
};
enum { ORT_SEQUENTIAL = 0, ORT_PARALLEL = 1 };
enum { ORT_INVALID_ARGUMENT = 2 }; /* OrtErrorCode (GetErrorCode) */
enum { ORT_DISABLE_ALL = 0, ORT_ENABLE_BASIC = 1, ORT_ENABLE_EXTENDED = 2, ORT_ENABLE_ALL = 99 };
enum { OrtDeviceAllocator = 0, OrtArenaAllocator = 1 };
enum { OrtMemTypeDefault = 0 };
enum {
    ONNX_TYPE_UNKNOWN = 0,
    ONNX_TYPE_TENSOR = 1,
    ONNX_TYPE_SEQUENCE = 2,
    ONNX_TYPE_MAP = 3,
    ONNX_TYPE_OPAQUE = 4,
    ONNX_TYPE_SPARSETENSOR = 5,
    ONNX_TYPE_OPTIONAL = 6,
};
/* ONNXTensorElementDataType: the same numbering as ONNX's TensorProto.DataType. */
enum {
    ORT_ELEM_UNDEFINED = 0,
    ORT_ELEM_FLOAT = 1,
    ORT_ELEM_UINT8 = 2,
    ORT_ELEM_INT8 = 3,
    ORT_ELEM_UINT16 = 4,
    ORT_ELEM_INT16 = 5,
    ORT_ELEM_INT32 = 6,
    ORT_ELEM_INT64 = 7,
    ORT_ELEM_STRING = 8,
    ORT_ELEM_BOOL = 9,
    ORT_ELEM_FLOAT16 = 10,
    ORT_ELEM_DOUBLE = 11,
    ORT_ELEM_UINT32 = 12,
    ORT_ELEM_UINT64 = 13,
    ORT_ELEM_COMPLEX64 = 14,
    ORT_ELEM_COMPLEX128 = 15,
    ORT_ELEM_BFLOAT16 = 16,
};

/* The OrtApi table: an array of function-pointer slots, read-only. */
typedef void (*bd_ort_slot_t)(void);
typedef struct {
    const bd_ort_slot_t *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} bd_ort_api_base_t;
typedef const bd_ort_api_base_t *(*bd_ort_get_api_base_fn)(void);

/* Is slot `name` in a table of API version `v`? Slots without ORT_SINCE_<name> are in every
 * version >= BD_ORT_API_MIN. */
#define ORT_HAS(v, name) ((v) >= ORT_SINCE_##name)

/* One line per slot used: its number, and its signature as a typedef. */
#define ORT_SLOT_GetErrorCode 1
typedef int (*ort_GetErrorCode_fn)(const OrtStatus *status);
#define ORT_SLOT_GetErrorMessage 2
typedef const char *(*ort_GetErrorMessage_fn)(const OrtStatus *status);
#define ORT_SLOT_CreateEnvWithCustomLogger 4
/* A logging function: param, severity (an OrtLoggingLevel), category, logid, code location,
 * message. */
typedef void (*ort_logging_fn)(void *param, int severity, const char *category, const char *logid,
                               const char *code_location, const char *message);
typedef OrtStatus *(*ort_CreateEnvWithCustomLogger_fn)(ort_logging_fn logging_function,
                                                       void *logger_param, int log_level,
                                                       const char *logid, OrtEnv **out);
#define ORT_SLOT_CreateSession 7
typedef OrtStatus *(*ort_CreateSession_fn)(const OrtEnv *env, const char *model_path,
                                           const OrtSessionOptions *options, OrtSession **out);
#define ORT_SLOT_Run 9
typedef OrtStatus *(*ort_Run_fn)(OrtSession *session, const OrtRunOptions *run_options,
                                 const char *const *input_names, const OrtValue *const *inputs,
                                 size_t input_len, const char *const *output_names,
                                 size_t output_names_len, OrtValue **outputs);
#define ORT_SLOT_CreateSessionOptions 10
typedef OrtStatus *(*ort_CreateSessionOptions_fn)(OrtSessionOptions **out);
#define ORT_SLOT_SetSessionExecutionMode 13
typedef OrtStatus *(*ort_SetSessionExecutionMode_fn)(OrtSessionOptions *options, int mode);
#define ORT_SLOT_SetSessionGraphOptimizationLevel 23
typedef OrtStatus *(*ort_SetSessionGraphOptimizationLevel_fn)(OrtSessionOptions *options,
                                                              int level);
#define ORT_SLOT_SetIntraOpNumThreads 24
typedef OrtStatus *(*ort_SetIntraOpNumThreads_fn)(OrtSessionOptions *options, int n);
#define ORT_SLOT_SetInterOpNumThreads 25
typedef OrtStatus *(*ort_SetInterOpNumThreads_fn)(OrtSessionOptions *options, int n);
#define ORT_SLOT_SessionGetInputCount 30
typedef OrtStatus *(*ort_SessionGetInputCount_fn)(const OrtSession *session, size_t *out);
#define ORT_SLOT_SessionGetOutputCount 31
typedef OrtStatus *(*ort_SessionGetOutputCount_fn)(const OrtSession *session, size_t *out);
#define ORT_SLOT_SessionGetInputTypeInfo 33
typedef OrtStatus *(*ort_SessionGetInputTypeInfo_fn)(const OrtSession *session, size_t index,
                                                     OrtTypeInfo **out);
#define ORT_SLOT_SessionGetOutputTypeInfo 34
typedef OrtStatus *(*ort_SessionGetOutputTypeInfo_fn)(const OrtSession *session, size_t index,
                                                      OrtTypeInfo **out);
#define ORT_SLOT_SessionGetInputName 36
typedef OrtStatus *(*ort_SessionGetInputName_fn)(const OrtSession *session, size_t index,
                                                 OrtAllocator *allocator, char **out);
#define ORT_SLOT_SessionGetOutputName 37
typedef OrtStatus *(*ort_SessionGetOutputName_fn)(const OrtSession *session, size_t index,
                                                  OrtAllocator *allocator, char **out);
#define ORT_SLOT_CreateRunOptions 39
typedef OrtStatus *(*ort_CreateRunOptions_fn)(OrtRunOptions **out);
#define ORT_SLOT_CreateTensorAsOrtValue 48
typedef OrtStatus *(*ort_CreateTensorAsOrtValue_fn)(OrtAllocator *allocator, const int64_t *shape,
                                                    size_t shape_len, int elem_type,
                                                    OrtValue **out);
#define ORT_SLOT_CreateTensorWithDataAsOrtValue 49
typedef OrtStatus *(*ort_CreateTensorWithDataAsOrtValue_fn)(const OrtMemoryInfo *info, void *data,
                                                            size_t data_len, const int64_t *shape,
                                                            size_t shape_len, int elem_type,
                                                            OrtValue **out);
#define ORT_SLOT_GetTensorMutableData 51
typedef OrtStatus *(*ort_GetTensorMutableData_fn)(OrtValue *value, void **out);
#define ORT_SLOT_GetStringTensorDataLength 53
typedef OrtStatus *(*ort_GetStringTensorDataLength_fn)(const OrtValue *value, size_t *len);
#define ORT_SLOT_GetStringTensorContent 54
typedef OrtStatus *(*ort_GetStringTensorContent_fn)(const OrtValue *value, void *s, size_t s_len,
                                                    size_t *offsets, size_t offsets_len);
#define ORT_SLOT_CastTypeInfoToTensorInfo 55
typedef OrtStatus *(*ort_CastTypeInfoToTensorInfo_fn)(const OrtTypeInfo *type_info,
                                                      const OrtTensorTypeAndShapeInfo **out);
#define ORT_SLOT_GetOnnxTypeFromTypeInfo 56
typedef OrtStatus *(*ort_GetOnnxTypeFromTypeInfo_fn)(const OrtTypeInfo *type_info, int *out);
#define ORT_SLOT_GetTensorElementType 60
typedef OrtStatus *(*ort_GetTensorElementType_fn)(const OrtTensorTypeAndShapeInfo *info, int *out);
#define ORT_SLOT_GetDimensionsCount 61
typedef OrtStatus *(*ort_GetDimensionsCount_fn)(const OrtTensorTypeAndShapeInfo *info, size_t *out);
#define ORT_SLOT_GetDimensions 62
typedef OrtStatus *(*ort_GetDimensions_fn)(const OrtTensorTypeAndShapeInfo *info, int64_t *dims,
                                           size_t dims_len);
#define ORT_SLOT_GetTensorTypeAndShape 65
typedef OrtStatus *(*ort_GetTensorTypeAndShape_fn)(const OrtValue *value,
                                                   OrtTensorTypeAndShapeInfo **out);
#define ORT_SLOT_CreateCpuMemoryInfo 69
typedef OrtStatus *(*ort_CreateCpuMemoryInfo_fn)(int allocator_type, int mem_type,
                                                 OrtMemoryInfo **out);
#define ORT_SLOT_AllocatorFree 76
typedef OrtStatus *(*ort_AllocatorFree_fn)(OrtAllocator *allocator, void *p);
#define ORT_SLOT_GetAllocatorWithDefaultOptions 78
typedef OrtStatus *(*ort_GetAllocatorWithDefaultOptions_fn)(OrtAllocator **out);
#define ORT_SLOT_ReleaseEnv 92
typedef void (*ort_ReleaseEnv_fn)(OrtEnv *p);
#define ORT_SLOT_ReleaseStatus 93
typedef void (*ort_ReleaseStatus_fn)(OrtStatus *p);
#define ORT_SLOT_ReleaseMemoryInfo 94
typedef void (*ort_ReleaseMemoryInfo_fn)(OrtMemoryInfo *p);
#define ORT_SLOT_ReleaseSession 95
typedef void (*ort_ReleaseSession_fn)(OrtSession *p);
#define ORT_SLOT_ReleaseValue 96
typedef void (*ort_ReleaseValue_fn)(OrtValue *p);
#define ORT_SLOT_ReleaseRunOptions 97
typedef void (*ort_ReleaseRunOptions_fn)(OrtRunOptions *p);
#define ORT_SLOT_ReleaseTypeInfo 98
typedef void (*ort_ReleaseTypeInfo_fn)(OrtTypeInfo *p);
#define ORT_SLOT_ReleaseTensorTypeAndShapeInfo 99
typedef void (*ort_ReleaseTensorTypeAndShapeInfo_fn)(OrtTensorTypeAndShapeInfo *p);
#define ORT_SLOT_ReleaseSessionOptions 100
typedef void (*ort_ReleaseSessionOptions_fn)(OrtSessionOptions *p);
#define ORT_SLOT_GetResizedStringTensorElementBuffer 252
#define ORT_SINCE_GetResizedStringTensorElementBuffer 15
typedef OrtStatus *(*ort_GetResizedStringTensorElementBuffer_fn)(OrtValue *value, size_t index,
                                                                 size_t length_in_bytes,
                                                                 char **buffer);
#define ORT_SLOT_AddSessionConfigEntry 130
typedef OrtStatus *(*ort_AddSessionConfigEntry_fn)(OrtSessionOptions *options, const char *key,
                                                   const char *value);

/* The CUDA execution provider. The V2 slots need a build with CUDA support compiled in (the
 * official GPU builds; also the CPU build of onnxruntime-node, which loads the provider from
 * beside itself); a build without it answers CreateCUDAProviderOptions with "CUDA execution
 * provider is not enabled in this build." and may still take the 1.6 struct (slot 152). */
#define ORT_SLOT_SessionOptionsAppendExecutionProvider_CUDA 152
#define ORT_SINCE_SessionOptionsAppendExecutionProvider_CUDA 6
typedef OrtStatus *(*ort_SessionOptionsAppendExecutionProvider_CUDA_fn)(
    OrtSessionOptions *options, const bd_ort_cuda_options_t *cuda_options);
#define ORT_SLOT_SessionOptionsAppendExecutionProvider_CUDA_V2 204
#define ORT_SINCE_SessionOptionsAppendExecutionProvider_CUDA_V2 11
typedef OrtStatus *(*ort_SessionOptionsAppendExecutionProvider_CUDA_V2_fn)(
    OrtSessionOptions *options, const OrtCUDAProviderOptionsV2 *cuda_options);
#define ORT_SLOT_CreateCUDAProviderOptions 205
#define ORT_SINCE_CreateCUDAProviderOptions 11
typedef OrtStatus *(*ort_CreateCUDAProviderOptions_fn)(OrtCUDAProviderOptionsV2 **out);
#define ORT_SLOT_UpdateCUDAProviderOptions 206
#define ORT_SINCE_UpdateCUDAProviderOptions 11
typedef OrtStatus *(*ort_UpdateCUDAProviderOptions_fn)(OrtCUDAProviderOptionsV2 *cuda_options,
                                                       const char *const *keys,
                                                       const char *const *values, size_t n);
#define ORT_SLOT_ReleaseCUDAProviderOptions 208
#define ORT_SINCE_ReleaseCUDAProviderOptions 11
typedef void (*ort_ReleaseCUDAProviderOptions_fn)(OrtCUDAProviderOptionsV2 *p);

/* Which execution provider each node was placed on, recorded when the session config entry
 * "session.record_ep_graph_assignment_info" is "1" at CreateSession. The arrays and strings
 * belong to the session. */
#define ORT_SLOT_Session_GetEpGraphAssignmentInfo 407
#define ORT_SINCE_Session_GetEpGraphAssignmentInfo 24
typedef OrtStatus *(*ort_Session_GetEpGraphAssignmentInfo_fn)(
    const OrtSession *session, const OrtEpAssignedSubgraph *const **subgraphs, size_t *n);
#define ORT_SLOT_EpAssignedSubgraph_GetEpName 408
#define ORT_SINCE_EpAssignedSubgraph_GetEpName 24
typedef OrtStatus *(*ort_EpAssignedSubgraph_GetEpName_fn)(const OrtEpAssignedSubgraph *subgraph,
                                                          const char **out);
#define ORT_SLOT_EpAssignedSubgraph_GetNodes 409
#define ORT_SINCE_EpAssignedSubgraph_GetNodes 24
typedef OrtStatus *(*ort_EpAssignedSubgraph_GetNodes_fn)(const OrtEpAssignedSubgraph *subgraph,
                                                         const OrtEpAssignedNode *const **nodes,
                                                         size_t *n);

/* Call slot `name` of table `api` (a const bd_ort_slot_t *) with its declared signature. */
#define ORT_FN(api, name) ((ort_##name##_fn)(api)[ORT_SLOT_##name])

#endif
