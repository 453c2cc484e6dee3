// Declarations only (see README.md here): the names ATen/cuda mentions from cuSPARSE.
#pragma once
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;
typedef struct cusparseContext* cusparseHandle_t;
