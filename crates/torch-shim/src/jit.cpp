// TorchScript tracing whose method returns ONE tuple of tensors. tch's atm_end_tracing registers
// each output separately, which gives a method with several return values that
// torch::jit::Module::save refuses ("Exportable methods must have a single return value").
// The rest mirrors tch's atm_create_for_tracing / atm_end_tracing.
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/fixup_trace_scope_blocks.h>
#include <torch/csrc/jit/passes/normalize_ops.h>
#include <torch/csrc/jit/serialization/export.h>

#include <string>
#include <vector>

#include "shim_error.h"

using torch::jit::Module;

extern "C" {

void* selfcon_shim_trace_begin(const char* name, const at::Tensor* const* inputs, int n, char** err) {
  SHIM_TRY(err, nullptr)
  if (torch::jit::tracer::isTracing()) throw std::invalid_argument("cannot nest tracing calls");
  Module module(name);
  auto state = std::make_shared<torch::jit::tracer::TracingState>();
  torch::jit::tracer::setTracingState(state);
  state->graph->insertInput(0, "self")->setType(module._ivalue()->type());
  for (int i = 0; i < n; ++i) {
    auto value = state->graph->addInput();
    value->setType(torch::jit::TensorType::get());
    state->setValue(*inputs[i], value);
  }
  return new Module(module);
  SHIM_CATCH(err, nullptr)
}

// Ends the trace begun by selfcon_shim_trace_begin: method `fn_name` returns (outputs...).
int selfcon_shim_trace_end_tuple(void* module, const char* fn_name, const at::Tensor* const* outputs, int n,
                                 char** err) {
  SHIM_TRY(err, -1)
  auto* m = static_cast<Module*>(module);
  auto state = torch::jit::tracer::getTracingState();
  if (state == nullptr) throw std::invalid_argument("not in tracing mode");
  std::vector<torch::jit::Value*> values;
  for (int i = 0; i < n; ++i) values.push_back(state->getOutput(*outputs[i], i));
  auto* tuple = state->graph->insertNode(state->graph->createTuple(values))->output();
  state->graph->registerOutput(tuple);
  torch::jit::FixupTraceScopeBlocks(state->graph, m);
  torch::jit::NormalizeOps(state->graph);
  torch::jit::tracer::setTracingState(nullptr);
  auto fn = m->_ivalue()->compilation_unit()->create_function(fn_name, state->graph);
  m->type()->addMethod(fn);
  return 0;
  SHIM_CATCH(err, -1)
}

void selfcon_shim_trace_abandon() { torch::jit::tracer::abandon(); }

int selfcon_shim_module_save(void* module, const char* path, char** err) {
  SHIM_TRY(err, -1)
  static_cast<Module*>(module)->save(path);
  return 0;
  SHIM_CATCH(err, -1)
}

void selfcon_shim_module_free(void* module) { delete static_cast<Module*>(module); }

}  // extern "C"
