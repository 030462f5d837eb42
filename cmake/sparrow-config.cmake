# find_package(Sparrow): the runtime libraries (sparrow::sparrow_engine reads and runs .spw and ONNX
# models; sparrow::sparrow_compress compresses them) and what they link.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(ZLIB)
find_dependency(fmt)
find_dependency(nlohmann_json)
find_dependency(Protobuf)
find_dependency(ONNX)
find_dependency(dnnl)
find_dependency(OpenMP)
find_dependency(Eigen3 NO_MODULE)
include(${CMAKE_CURRENT_LIST_DIR}/sparrow-targets.cmake)
