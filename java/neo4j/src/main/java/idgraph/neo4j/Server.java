package idgraph.neo4j;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Path;
import java.time.Duration;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

/**
 * Neo4j Community, embedded, serving Bolt on loopback: {@code Server HOME PORT}.
 *
 * <p>Authentication is on: user {@code neo4j} gets the password in the environment variable
 * {@code NEO4J_INITIAL_PASSWORD} (kept out of the command line, which process lists show).
 * Prints {@code READY bolt://127.0.0.1:PORT} once the database answers, and shuts down
 * cleanly when its standard input closes, so it never outlives the process that started it.
 */
public final class Server {
    private Server() {
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: Server HOME PORT");
            System.exit(2);
        }
        Path home = Path.of(args[0]);
        int port = Integer.parseInt(args[1]);
        String password = System.getenv("NEO4J_INITIAL_PASSWORD");
        if (password == null || password.length() < 8) {
            System.err.println("NEO4J_INITIAL_PASSWORD must hold a password of 8 characters or more");
            System.exit(2);
        }
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, 128L * 1024 * 1024)
                // An erasure's deleted values stay in the transaction log that recorded them until
                // that log is pruned (docs/neo4j.md, "Erasure and the transaction logs"): keep no
                // log past the newest, rotate at 1 MiB, checkpoint (which prunes) every minute.
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "keep_none")
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 1024L * 1024)
                .setConfig(GraphDatabaseSettings.check_point_interval_time, Duration.ofMinutes(1))
                // Without these a shutdown waits ~12 s for idle Bolt threads and connections.
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofMillis(100))
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofMillis(100))
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown));
        dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME).executeTransactionally(
                "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED", java.util.Map.of("password", password));
        dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME).executeTransactionally("RETURN 1");
        System.out.println("READY bolt://127.0.0.1:" + port);
        System.out.flush();
        InputStream in = System.in;
        while (in.read() != -1) {
            // Anything written is ignored; end of input is the signal to stop.
        }
        System.exit(0);
    }
}
