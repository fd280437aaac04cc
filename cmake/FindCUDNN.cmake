# FindCUDNN
# ---------
# Finds the NVIDIA cuDNN library (version 8 or 9).
#
# Hints:  CUDNN_ROOT (CMake or environment variable): a prefix holding
#         include/cudnn.h (and cudnn_version.h) and lib/libcudnn.so. CUDA
#         toolkit locations and the system paths are searched after it.
# Result: CUDNN_FOUND, CUDNN_VERSION, CUDNN_INCLUDE_DIR, CUDNN_LIBRARY and the
#         imported target CUDNN::CUDNN.

set(_cudnn_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} $ENV{CUDNN_HOME})
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _cudnn_hints ${CUDAToolkit_LIBRARY_ROOT})
endif()

find_path(CUDNN_INCLUDE_DIR cudnn.h
  HINTS ${_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY NAMES cudnn
  HINTS ${_cudnn_hints} ${CUDAToolkit_LIBRARY_DIR}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)

# cuDNN 8+ keeps the version in cudnn_version.h; older releases in cudnn.h.
set(_cudnn_version_header "${CUDNN_INCLUDE_DIR}/cudnn_version.h")
if(NOT EXISTS "${_cudnn_version_header}")
  set(_cudnn_version_header "${CUDNN_INCLUDE_DIR}/cudnn.h")
endif()
if(CUDNN_INCLUDE_DIR AND EXISTS "${_cudnn_version_header}")
  file(STRINGS "${_cudnn_version_header}" _cudnn_version_lines
       REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL)[ \t]+[0-9]+")
  foreach(_part MAJOR MINOR PATCHLEVEL)
    string(REGEX REPLACE ".*#define CUDNN_${_part}[ \t]+([0-9]+).*" "\\1" _cudnn_${_part}
           "${_cudnn_version_lines}")
  endforeach()
  if(_cudnn_MAJOR MATCHES "^[0-9]+$")
    set(CUDNN_VERSION "${_cudnn_MAJOR}.${_cudnn_MINOR}.${_cudnn_PATCHLEVEL}")
  endif()
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CUDNN
  REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR
  VERSION_VAR CUDNN_VERSION
  REASON_FAILURE_MESSAGE
    "Set CUDNN_ROOT to the prefix that holds include/cudnn.h and lib/libcudnn.so, or configure with -DDGS_WITH_CUDNN=OFF.")

if(CUDNN_FOUND AND NOT TARGET CUDNN::CUDNN)
  add_library(CUDNN::CUDNN UNKNOWN IMPORTED)
  set_target_properties(CUDNN::CUDNN PROPERTIES
    IMPORTED_LOCATION "${CUDNN_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(CUDNN_INCLUDE_DIR CUDNN_LIBRARY)
