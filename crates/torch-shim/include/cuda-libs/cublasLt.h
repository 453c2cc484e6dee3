// Declarations only (see README.md here): the name ATen/cuda/CUDAContextLight.h mentions.
#pragma once
typedef struct cublasLtContext* cublasLtHandle_t;
