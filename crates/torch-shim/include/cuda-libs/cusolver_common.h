// Declarations only (see README.md here): the name ATen/cuda/Exceptions.h mentions.
#pragma once
typedef enum { CUSOLVER_STATUS_SUCCESS = 0 } cusolverStatus_t;
