// Declarations only (see README.md here): the names ATen/cuda/CUDAContextLight.h and
// ATen/cuda/Exceptions.h mention from cuBLAS.
#pragma once
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
typedef struct cublasContext* cublasHandle_t;
