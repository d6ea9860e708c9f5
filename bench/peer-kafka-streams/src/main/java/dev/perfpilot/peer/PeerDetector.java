package dev.perfpilot.peer;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * perfpilot's detector job as a team writes it today with Kafka Streams: per series, an
 * exponentially weighted mean and variance in a persistent key-value store (RocksDB, with
 * its changelog), and an Anomaly record when a point lies more than {@link #THRESHOLD}
 * standard deviations from the mean. It reads and writes perfpilot's own records (Avro
 * single-object encoding, the schemas in {@code schemas/}), so both run over the same
 * events.
 *
 * <p>Arguments: {@code --bootstrap-servers B --input T --output T --application-id ID
 * --guarantee at_least_once|exactly_once_v2 --schemas DIR [--state-dir DIR]
 * [--commit-interval-ms MS] [--threads N]}.
 */
public final class PeerDetector {
  /** Smoothing of the mean and variance. */
  static final double ALPHA = 0.05;
  /** |z| at which a point is anomalous. */
  static final double THRESHOLD = 4.0;
  /** Points per series before any is judged. */
  static final long WARMUP = 30;

  private PeerDetector() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> a = parse(args);
    Schema metric = load(a, "MetricEvent");
    Schema anomaly = load(a, "Anomaly");

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, need(a, "application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, need(a, "bootstrap-servers"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.getOrDefault("guarantee", "at_least_once"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, a.getOrDefault("state-dir", System.getProperty("java.io.tmpdir") + "/peer-kafka-streams"));
    p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.getOrDefault("commit-interval-ms", "100"));
    if (a.containsKey("threads")) {
      p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.get("threads"));
    }

    StreamsBuilder b = new StreamsBuilder();
    b.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore("ewma"), Serdes.String(), Serdes.ByteArray()));
    b.stream(need(a, "input"), Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
        .process(() -> new Ewma(metric, anomaly), "ewma")
        .to(need(a, "output"), Produced.with(Serdes.Bytes(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(b.build(), p);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close();
      done.countDown();
    }));
    streams.start();
    done.await();
  }

  /** The per-series EWMA z-score, state in the "ewma" store. */
  static final class Ewma implements Processor<Bytes, byte[], Bytes, byte[]> {
    private final BinaryMessageDecoder<GenericRecord> decoder;
    private final BinaryMessageEncoder<GenericRecord> encoder;
    private final Schema anomaly;
    private ProcessorContext<Bytes, byte[]> context;
    private KeyValueStore<String, byte[]> store;

    Ewma(Schema metric, Schema anomaly) {
      this.decoder = new BinaryMessageDecoder<>(GenericData.get(), metric);
      this.encoder = new BinaryMessageEncoder<>(GenericData.get(), anomaly);
      this.anomaly = anomaly;
    }

    @Override
    public void init(ProcessorContext<Bytes, byte[]> context) {
      this.context = context;
      this.store = context.getStateStore("ewma");
    }

    @Override
    public void process(Record<Bytes, byte[]> record) {
      GenericRecord e;
      try {
        e = decoder.decode(record.value());
      } catch (IOException | RuntimeException bad) {
        return; // a team's job skips what it cannot read
      }
      double value = (Double) e.get("value");
      if (!Double.isFinite(value)) {
        return;
      }
      String target = e.get("target").toString();
      String metricName = e.get("metric").toString();
      @SuppressWarnings("unchecked")
      Map<Object, Object> labels = (Map<Object, Object>) e.get("labels");
      StringBuilder key = new StringBuilder(target).append('\0').append(metricName);
      if (labels != null && !labels.isEmpty()) {
        TreeMap<String, String> sorted = new TreeMap<>();
        labels.forEach((k, v) -> sorted.put(k.toString(), v.toString()));
        sorted.forEach((k, v) -> key.append('\0').append(k).append('=').append(v));
      }
      String k = key.toString();

      byte[] old = store.get(k);
      long n = 0;
      double mean = value;
      double var = 0.0;
      if (old != null) {
        ByteBuffer s = ByteBuffer.wrap(old);
        n = s.getLong();
        mean = s.getDouble();
        var = s.getDouble();
      }
      double sd = Math.sqrt(var);
      double z = sd > 0 ? (value - mean) / sd : 0.0;
      if (n >= WARMUP && Math.abs(z) > THRESHOLD) {
        context.forward(record.withValue(anomalyOf(e, target, metricName, labels, value, mean, sd, z)));
      }
      double d = value - mean;
      mean += ALPHA * d;
      var = (1 - ALPHA) * (var + ALPHA * d * d);
      store.put(k, ByteBuffer.allocate(24).putLong(n + 1).putDouble(mean).putDouble(var).array());
    }

    private byte[] anomalyOf(GenericRecord e, String target, String metricName,
        Map<Object, Object> labels, double value, double mean, double sd, double z) {
      GenericRecord r = new GenericData.Record(anomaly);
      long ts = (Long) e.get("timestamp_ms");
      Object pool = e.get("pool");
      r.put("id", target + "/" + metricName + "/" + ts);
      r.put("target", target);
      r.put("pool", pool == null ? "" : pool.toString());
      r.put("metric", metricName);
      r.put("labels", labels == null ? Map.of() : labels);
      r.put("timestamp_ms", ts);
      r.put("value", value);
      r.put("expected", mean);
      r.put("lower", mean - THRESHOLD * sd);
      r.put("upper", mean + THRESHOLD * sd);
      r.put("score", Math.min(1.0, Math.abs(z) / (2 * THRESHOLD)));
      Schema severity = anomaly.getField("severity").schema();
      r.put("severity", new GenericData.EnumSymbol(severity, Math.abs(z) > 2 * THRESHOLD ? "CRITICAL" : "WARNING"));
      Schema direction = anomaly.getField("direction").schema();
      r.put("direction", new GenericData.EnumSymbol(direction, z > 0 ? "UP" : "DOWN"));
      List<String> detectors = new ArrayList<>();
      detectors.add("ewma");
      r.put("detectors", detectors);
      r.put("reason", String.format("value %.3f is %.1f standard deviations from its EWMA %.3f", value, z, mean));
      try {
        ByteBuffer buf = encoder.encode(r);
        byte[] out = new byte[buf.remaining()];
        buf.get(out);
        return out;
      } catch (IOException io) {
        throw new IllegalStateException(io);
      }
    }
  }

  private static Schema load(Map<String, String> a, String name) throws IOException {
    return new Schema.Parser().parse(new File(need(a, "schemas"), name + ".avsc"));
  }

  private static String need(Map<String, String> a, String k) {
    String v = a.get(k);
    if (v == null) {
      System.err.println("peer-kafka-streams: --" + k + " is required");
      System.exit(2);
    }
    return v;
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> a = new TreeMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        System.err.println("peer-kafka-streams: expected --name value, got " + args[i]);
        System.exit(2);
      }
      a.put(args[i].substring(2), args[i + 1]);
    }
    return a;
  }
}
