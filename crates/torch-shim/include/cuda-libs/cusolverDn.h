// Declarations only (see README.md here): the name ATen/cuda/CUDAContextLight.h mentions.
#pragma once
#include <cusolver_common.h>
typedef struct cusolverDnContext* cusolverDnHandle_t;
