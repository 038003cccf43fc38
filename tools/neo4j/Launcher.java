package ragvisor.neo4j;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * The real Neo4j engine (community edition, from Maven Central) with its Bolt connector on
 * loopback, for development and tests: `java -cp ... ragvisor.neo4j.Launcher HOME PORT
 * PASSWORD_FILE PAGECACHE_MB`. Auth is on; the `neo4j` user's password is the file's content.
 * Prints `READY bolt://127.0.0.1:PORT` once Bolt accepts, and shuts down cleanly on SIGTERM.
 */
public final class Launcher {
  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: Launcher HOME PORT PASSWORD_FILE PAGECACHE_MB");
      System.exit(2);
    }
    Path home = Path.of(args[0]);
    int port = Integer.parseInt(args[1]);
    String password = Files.readString(Path.of(args[2]), StandardCharsets.UTF_8).strip();
    long pageCacheMb = Long.parseLong(args[3]);
    DatabaseManagementService service =
        new DatabaseManagementServiceBuilder(home)
            .setConfig(GraphDatabaseSettings.auth_enabled, true)
            .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMb))
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
            .setConfig(HttpConnector.enabled, false)
            .build();
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  service.shutdown();
                  stopped.countDown();
                }));
    try {
      setPassword(service, password);
    } catch (RuntimeException e) {
      // Neo4j's threads would keep the JVM alive: stop them, then say why and exit.
      System.err.println("cannot set the neo4j user's password: " + e.getMessage());
      service.shutdown();
      System.exit(1);
    }
    System.out.println("READY bolt://127.0.0.1:" + port);
    System.out.flush();
    stopped.await();
  }

  /** Set the `neo4j` user's password; a restart with the same password keeps it as it is. */
  private static void setPassword(DatabaseManagementService service, String password) {
    try {
      service
          .database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME)
          .executeTransactionally(
              "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED",
              Map.of("password", password));
    } catch (RuntimeException e) {
      if (!String.valueOf(e.getMessage()).contains("cannot be the same")) {
        throw e;
      }
    }
  }
}
