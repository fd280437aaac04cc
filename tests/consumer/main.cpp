// Uses the installed public API: a Config, Segments, and the buffer layout a
// worker would allocate. Exits non-zero if anything is off.
#include <cstdio>

#include <dgs/dgs.h>

int main() {
  dgs::Config config;
  config.method = dgs::Method::samomentum;
  config.ratio = 0.01;
  config.validate();
  const dgs::Segments model({1000, 10, 5000});
  const dgs::MessageLayout push = dgs::push_layout(model, config);
  std::printf("dgs %s: push buffer of %llu bytes for %llu entries\n", DGS_VERSION_STRING,
              static_cast<unsigned long long>(push.bytes),
              static_cast<unsigned long long>(push.capacity));
  try {
    config.ratio = 2.0;
    config.validate();
  } catch (const dgs::Error& e) {
    return e.field() == "ratio" && push.capacity == 61 ? 0 : 1;
  }
  return 1;
}
