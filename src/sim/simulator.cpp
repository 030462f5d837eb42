#include "sim/simulator.h"

#include <algorithm>
#include <cmath>

namespace sparrow::sim {

int16_t to_fixed(float v, int frac_bits) {
  double s = std::nearbyint(static_cast<double>(v) * (1 << frac_bits));
  return static_cast<int16_t>(std::clamp(s, -32768.0, 32767.0));
}

float from_fixed(int64_t v, int frac_bits) {
  return static_cast<float>(static_cast<double>(v) / (1 << frac_bits));
}

Result<SimLayer> make_sim_layer(const std::string& name, const std::vector<uint8_t>& codes, int64_t rows,
                                int64_t cols, const std::vector<float>& codebook,
                                const std::vector<float>& bias, bool relu, const Config& config) {
  if (codebook.size() > (size_t{1} << config.weight_bits))
    return errorf("layer '{}': codebook of {} entries does not fit {}-bit codes (config key 'weight_bits')",
                  name, codebook.size(), config.weight_bits);
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != rows)
    return errorf("layer '{}': {} biases for {} rows", name, bias.size(), rows);
  SimLayer l;
  l.name = name;
  l.rows = rows;
  l.cols = cols;
  l.relu = relu;
  l.encoding = encode_sparse(codes, MatrixView{rows, cols, false}, config.pes, config.index_bits);
  for (float v : codebook) l.codebook.push_back(to_fixed(v, config.codebook_frac_bits));
  l.codebook.resize(size_t{1} << config.weight_bits, 0);
  l.codebook[0] = 0;
  for (float b : bias)
    l.bias.push_back(static_cast<int64_t>(std::llround(
        static_cast<double>(b) * (1LL << (config.activation_frac_bits + config.codebook_frac_bits)))));
  return l;
}

Result<SimLayer> make_sim_layer(const CompressedTensor& t, const std::vector<float>& bias, bool relu,
                                const Config& config) {
  SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
  return make_sim_layer(t.name, codes, t.view.rows, t.view.cols, t.codebook, bias, relu, config);
}

namespace {

// Rounds an accumulator to the activation format, applies ReLU and saturates.
int16_t finish(int64_t acc, const Config& c, bool relu) {
  int shift = c.codebook_frac_bits;
  int64_t v = shift > 0 ? (acc + (int64_t{1} << (shift - 1))) >> shift : acc;
  if (relu && v < 0) v = 0;
  return static_cast<int16_t>(std::clamp<int64_t>(v, -32768, 32767));
}

struct Broadcast {
  int32_t column;
  int16_t value;
};

// The activation FIFO of one PE (a ring buffer of fixed depth).
class ActivationFifo {
 public:
  explicit ActivationFifo(int depth) : slots_(static_cast<size_t>(depth)) {}
  bool full() const { return count_ == static_cast<int>(slots_.size()); }
  bool empty() const { return count_ == 0; }
  void push(Broadcast b) {
    slots_[(head_ + count_) % slots_.size()] = b;
    ++count_;
  }
  const Broadcast& front() const { return slots_[head_]; }
  void pop() {
    head_ = (head_ + 1) % slots_.size();
    --count_;
  }

 private:
  std::vector<Broadcast> slots_;
  size_t head_ = 0;
  int count_ = 0;
};

// One column being walked by a PE: entries [next, end) of its partition.
struct ColumnWalk {
  bool valid = false;
  int16_t activation = 0;
  uint32_t next = 0, end = 0;
  int64_t row = -1;  // local row of the last entry
};

class ProcessingElement {
 public:
  ProcessingElement(const Config& c, const SimLayer& l, int index)
      : c_(c),
        l_(l),
        part_(l.encoding.partitions[index]),
        fifo_(c.fifo_depth),
        acc_(static_cast<size_t>(part_.col_counts.size() ? local_rows(l, c.pes, index) : 0), 0) {
    col_ptr_.assign(part_.col_counts.size() + 1, 0);
    for (size_t j = 0; j < part_.col_counts.size(); ++j) col_ptr_[j + 1] = col_ptr_[j] + part_.col_counts[j];
    for (int64_t r = 0; r < static_cast<int64_t>(acc_.size()); ++r)
      if (!l.bias.empty()) acc_[r] = l.bias[r * c.pes + index];
  }

  static int64_t local_rows(const SimLayer& l, int pes, int p) {
    return l.rows > p ? (l.rows - p + pes - 1) / pes : 0;
  }

  bool fifo_full() const { return fifo_.full(); }
  bool done() const { return fifo_.empty() && !walking() && stall_ == 0; }

  // Decides this cycle's work from the registered state and commits it (the PE's state is private,
  // so its propagate and update can run back to back; the FIFO push is the broadcast's update).
  // The head of the FIFO is the column whose pointers are read; it leaves the FIFO when the
  // arithmetic stage takes it, so the FIFO depth bounds all columns waiting in the PE.
  void cycle(LayerStats& s) {
    if (stall_ > 0) {
      --stall_;
      ++s.hazard_stall_cycles;
      ++s.pe_idle_cycles;
      read_pointers(s);
      return;
    }
    if (!walking() && head_ready_) {  // the head's pointers were read last cycle: start its walk
      const Broadcast& b = fifo_.front();
      walk_ = ColumnWalk{true, b.value, col_ptr_[b.column], col_ptr_[b.column + 1], -1};
      fifo_.pop();
      ++s.fifo_ops;
      head_ready_ = false;
    }
    if (walking())
      mac(s);
    else
      ++s.pe_idle_cycles;
    read_pointers(s);
  }

  void push(Broadcast b) { fifo_.push(b); }
  const std::vector<int64_t>& accumulators() const { return acc_; }

 private:
  bool walking() const { return walk_.valid && walk_.next < walk_.end; }

  // Pointer stage: read p[j], p[j+1] of the FIFO head (two banks, one cycle).
  void read_pointers(LayerStats& s) {
    if (head_ready_ || fifo_.empty()) return;
    ++s.pointer_reads;
    head_ready_ = true;
  }

  // Arithmetic stage: one entry.
  void mac(LayerStats& s) {
    uint32_t e = walk_.next++;
    int64_t word = e / static_cast<uint32_t>(c_.entries_per_read());
    if (word != last_word_) {
      ++s.spmat_reads;
      last_word_ = word;
    }
    int64_t row = walk_.row + part_.gaps[e] + 1;
    walk_.row = row;
    uint8_t code = part_.codes[e];
    ++s.entries;
    if (code == 0) {
      ++s.fillers;
      return;
    }
    if (row == last_row_) {
      if (c_.bypass)
        ++s.bypass_hits;
      else
        stall_ = c_.pipeline_depth - 1;
    }
    last_row_ = row;
    acc_[row] += static_cast<int64_t>(l_.codebook[code]) * walk_.activation;
    ++s.macs;
    ++s.accumulator_updates;
  }

  const Config& c_;
  const SimLayer& l_;
  const Partition& part_;
  std::vector<uint32_t> col_ptr_;
  ActivationFifo fifo_;
  ColumnWalk walk_;
  bool head_ready_ = false;  // the FIFO head's pointers have been read
  std::vector<int64_t> acc_;
  int64_t last_word_ = -1, last_row_ = -1;
  int stall_ = 0;
};

// Per-PE storage of the layer against the SRAM and register-file capacities of the config.
void account_storage(const Config& c, const SimLayer& l, LayerStats& s) {
  int64_t max_entries = 0;
  for (const auto& p : l.encoding.partitions)
    max_entries = std::max<int64_t>(max_entries, static_cast<int64_t>(p.codes.size()));
  s.spmat_bytes_per_pe = (max_entries * c.entry_bits + 7) / 8;
  s.pointer_bytes_per_pe = (l.cols + 1) * 2;
  int64_t inputs = (l.cols + c.pes - 1) / c.pes, outputs = (l.rows + c.pes - 1) / c.pes;
  s.activation_bytes_per_pe = (inputs + outputs) * (c.activation_bits / 8);
  s.activations_in_regfile = inputs <= c.act_regfile_entries && outputs <= c.act_regfile_entries;
  s.fits_on_chip = s.spmat_bytes_per_pe <= c.spmat_sram_bytes &&
                   s.pointer_bytes_per_pe <= c.pointer_sram_bytes &&
                   (s.activations_in_regfile || s.activation_bytes_per_pe <= c.act_sram_bytes);
}

void finish_stats(const Config& c, const SimLayer& l, LayerStats& s, const std::vector<int64_t>& pe_entries) {
  s.time_us = static_cast<double>(s.cycles) / c.clock_mhz;
  double mean = 0;
  int64_t max_entries = 0;
  for (int64_t e : pe_entries) {
    mean += static_cast<double>(e) / static_cast<double>(pe_entries.size());
    max_entries = std::max(max_entries, e);
  }
  s.load_balance = max_entries ? mean / static_cast<double>(max_entries) : 1.0;
  s.imbalance_cycles = max_entries - std::llround(mean);
  s.theoretical_us = std::max(mean, static_cast<double>(s.active_inputs)) / c.clock_mhz;
  s.idle_fraction =
      s.cycles ? static_cast<double>(s.pe_idle_cycles) / (static_cast<double>(s.cycles) * c.pes) : 0.0;
  const EnergyTable& e = c.energy;
  double per_read =
      e.spmat_read_pj * (1.0 - e.spmat_width_fraction + e.spmat_width_fraction * c.spmat_width_bits / 64.0);
  s.spmat_uj = s.spmat_reads * per_read * 1e-6;
  s.pointer_uj = s.pointer_reads * e.pointer_read_pj * 1e-6;
  s.arith_uj = s.macs * e.mac_pj * 1e-6;
  s.act_uj = (s.accumulator_updates + s.output_writes) * e.act_rw_pj * 1e-6;
  s.fifo_uj = s.fifo_ops * e.fifo_pj * 1e-6;
  s.lnzd_uj = s.lnzd_reads * e.lnzd_pj * 1e-6;
  s.idle_uj = e.idle_mw_per_pe * c.pes * s.time_us * 1e-3;
  s.energy_uj = s.spmat_uj + s.pointer_uj + s.arith_uj + s.act_uj + s.fifo_uj + s.lnzd_uj + s.idle_uj;
  s.power_w = s.time_us > 0 ? s.energy_uj / s.time_us : 0.0;
  s.gops = s.time_us > 0 ? 2.0 * static_cast<double>(s.macs) / (s.time_us * 1e3) : 0.0;
  account_storage(c, l, s);
}

}  // namespace

LayerResult simulate_layer(const Config& c, const SimLayer& l, const std::vector<int16_t>& input) {
  LayerResult r;
  LayerStats& s = r.stats;
  s.name = l.name;
  s.rows = l.rows;
  s.cols = l.cols;
  s.pes = c.pes;
  std::vector<ProcessingElement> pes;
  pes.reserve(static_cast<size_t>(c.pes));
  for (int p = 0; p < c.pes; ++p) pes.emplace_back(c, l, p);
  // The leading-non-zero detectors examine every input once; the non-zeros are broadcast in order.
  std::vector<Broadcast> nonzeros;
  for (int64_t j = 0; j < l.cols; ++j)
    if (input[j] != 0) nonzeros.push_back({static_cast<int32_t>(j), input[j]});
  s.lnzd_reads = l.cols;
  s.active_inputs = static_cast<int64_t>(nonzeros.size());
  size_t next = 0;
  for (;;) {
    // propagate: the broadcast goes out only if no FIFO is full at the start of the cycle
    bool any_full = false;
    for (const auto& pe : pes) any_full = any_full || pe.fifo_full();
    bool broadcast = next < nonzeros.size() && !any_full;
    if (next < nonzeros.size() && any_full) ++s.broadcast_stall_cycles;
    bool all_done = next >= nonzeros.size();
    for (const auto& pe : pes) all_done = all_done && pe.done();
    if (all_done) break;
    // update: PEs step on their registered state, then the broadcast lands in every FIFO
    for (auto& pe : pes) pe.cycle(s);
    if (broadcast) {
      for (auto& pe : pes) pe.push(nonzeros[next]);
      s.fifo_ops += c.pes;
      ++next;
    }
    ++s.cycles;
  }
  r.outputs.assign(static_cast<size_t>(l.rows), 0);
  std::vector<int64_t> pe_entries;
  for (int p = 0; p < c.pes; ++p) {
    const auto& acc = pes[p].accumulators();
    for (size_t k = 0; k < acc.size(); ++k) r.outputs[k * c.pes + p] = finish(acc[k], c, l.relu);
    int64_t e = 0;
    for (const auto& b : nonzeros) e += l.encoding.partitions[p].col_counts[b.column];
    pe_entries.push_back(e);
  }
  s.output_writes = l.rows;
  finish_stats(c, l, s, pe_entries);
  return r;
}

std::vector<int16_t> fixed_point_reference(const Config& c, const SimLayer& l,
                                           const std::vector<int16_t>& input) {
  auto codes = decode_codes(l.encoding);
  std::vector<int16_t> out(static_cast<size_t>(l.rows));
  for (int64_t r = 0; r < l.rows; ++r) {
    int64_t acc = l.bias.empty() ? 0 : l.bias[r];
    for (int64_t j = 0; j < l.cols; ++j)
      acc += static_cast<int64_t>(l.codebook[(*codes)[r * l.cols + j]]) * input[j];
    out[r] = finish(acc, c, l.relu);
  }
  return out;
}

}  // namespace sparrow::sim
